package events

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// Stream timing. A keep-alive comment makes a dead client show up as a
// failed write, and keeps idle intermediaries from closing the stream.
const (
	keepAlive    = 15 * time.Second
	writeTimeout = 30 * time.Second // one batch to a client that stopped reading
)

// ServeHTTP streams events as Server-Sent Events: "event: KIND" and one
// "data:" line of JSON per event. ?instance=ID limits decisions and console
// lines to one instance. The subscription exists by the time the response
// headers are sent, so a client that saw them misses nothing published later.
// The stream ends when the client hangs up or the hub is closed.
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	sub := h.Subscribe(r.URL.Query().Get("instance"))
	defer sub.Close()

	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream; charset=utf-8")
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriterSize(w, 16<<10)
	flush := func() error {
		_ = rc.SetWriteDeadline(time.Now().Add(writeTimeout))
		if err := bw.Flush(); err != nil {
			return err
		}
		return rc.Flush()
	}
	fmt.Fprint(bw, ": outbound events\n\n")
	if flush() != nil {
		return
	}

	tick := time.NewTicker(keepAlive)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-h.done:
			return
		case <-tick.C:
			fmt.Fprint(bw, ": keep-alive\n\n")
		case ev := <-sub.Events():
			writeEvent(bw, ev)
			// Send what else is queued in the same write.
			for more := true; more; {
				select {
				case ev := <-sub.Events():
					writeEvent(bw, ev)
				default:
					more = false
				}
			}
		}
		// Drops happen only while the queue is full, so they came after
		// everything just written.
		if n := sub.TakeDropped(); n > 0 {
			data, _ := json.Marshal(Dropped{Dropped: n})
			writeEvent(bw, Event{Kind: KindDropped, Data: data})
		}
		if flush() != nil { // hung up, or stopped reading for writeTimeout
			return
		}
	}
}

// writeEvent writes one event. Data is JSON, which has no raw newlines, so it
// is one "data:" line.
func writeEvent(bw *bufio.Writer, ev Event) {
	bw.WriteString("event: ")
	bw.WriteString(ev.Kind)
	bw.WriteString("\ndata: ")
	bw.Write(ev.Data)
	bw.WriteString("\n\n")
}
