package main

import (
	"fmt"
	"io"
	"runtime"
	"strings"
	"time"
)

// report prints the run's figures and verdict, and says whether it passed.
func report(w io.Writer, r *result) bool {
	o := r.opts
	var fails []string
	fmt.Fprintf(w, "\n## outbound soak\n\n")
	fmt.Fprintf(w, "%d clients over %d instances for %s (after a %s warm-up), a script reload every %s; "+
		"per-request timeout %s, think time %s; %d CPUs, %s, open-files limit %d\n\n",
		o.clients, o.instances, r.main.End.Sub(r.main.Start).Round(time.Second), o.warmup, o.reloadEvery,
		o.timeout, o.think, runtime.NumCPU(), runtime.Version(), r.fdLimit)

	errsByKind := map[string]int{}
	for _, l := range r.main.Errs.Lines() {
		k, _, _ := strings.Cut(l.Key, ": ")
		errsByKind[k] += l.Count
	}
	elapsed := r.main.End.Sub(r.main.Start).Seconds()
	clients := map[string]int{}
	for i := range o.clients {
		clients[clientKind(i, o.instances)]++
	}
	fmt.Fprintf(w, "| kind | clients | requests | per second | errors | p50 | p99 | connections opened |\n")
	fmt.Fprintf(w, "|---|--:|--:|--:|--:|--:|--:|--:|\n")
	var total uint64
	for _, k := range kinds {
		h := r.main.Lat[k]
		n := h.Count()
		total += n
		conns, cl := "—", "—"
		if k != "ws-echo" {
			conns, cl = fmt.Sprint(r.main.Dials[k].Load()), fmt.Sprint(clients[k])
		}
		fmt.Fprintf(w, "| %s | %s | %d | %.0f | %d | %s | %s | %s |\n", k, cl, n, float64(n)/elapsed, errsByKind[k],
			ms(h.Percentile(50)), ms(h.Percentile(99)), conns)
	}
	fmt.Fprintf(w, "| all | %d | %d | %.0f | %d | | | |\n\n", o.clients, total, float64(total)/elapsed, r.main.Errs.Total())
	fmt.Fprintf(w, "ws and wss count handshakes, each on a new connection; ws-echo the round trips inside them. "+
		"HTTP(S) clients keep their connection alive: connections opened above their number are reconnections.\n")
	fmt.Fprintf(w, "Requests cut off by the end of the load (not errors): %d. Warm-up: %d requests, %d errors.\n",
		r.main.Cut.Load(), r.warm.Requests(), r.warm.Errs.Total())
	fmt.Fprintf(w, "The upstream saw %d requests and %d WebSocket sessions.\n\n", r.upReqs, r.upWS)

	rl := r.reloads
	fmt.Fprintf(w, "Reloads: %d (%d served before the end)", rl.Reloads, len(rl.Lags))
	if len(rl.Lags) > 0 {
		fmt.Fprintf(w, "; rewrite to first response with the new version: p50 %s, max %s",
			ms(rl.Lags[(len(rl.Lags)-1)/2]), ms(rl.Lags[len(rl.Lags)-1]))
	}
	fmt.Fprintln(w)
	if len(rl.Unseen) > 0 {
		fails = append(fails, fmt.Sprintf("script versions %v were written but never served", rl.Unseen))
	}
	for _, err := range r.reloadErrs {
		fails = append(fails, err.Error())
	}
	if rl.Reloads == 0 {
		fails = append(fails, "no reload happened during the load (raise -duration or lower -reload-every)")
	}

	fmt.Fprintf(w, "\n| outbound | goroutines | heap in use | RSS | open tunnels |\n|---|--:|--:|--:|--:|\n")
	row := func(name string, s Sample) {
		fmt.Fprintf(w, "| %s | %.0f | %s | %s | %.0f |\n", name, s.Goroutines, mib(s.HeapInuse), mib(s.RSS), s.Tunnels)
	}
	row(fmt.Sprintf("baseline (%s after the warm-up)", o.idle), r.baseline)
	if len(r.samples) > 0 {
		row(fmt.Sprintf("peak of %d samples under load", len(r.samples)), r.peak)
	}
	row(fmt.Sprintf("after (%s after the load)", o.idle), r.firstAfter)
	if r.after.At != r.firstAfter.At {
		row(fmt.Sprintf("after (%s after the load)", r.after.At.Sub(r.main.End).Round(time.Second)), r.after)
	}
	fmt.Fprintf(w, "\nLimits after the load: goroutines ≤ baseline + %d, heap in use ≤ baseline × %.2g + %s.\n",
		o.limits.GoroutineSlack, o.limits.HeapFactor, mib(o.limits.HeapSlack))
	fails = append(fails, r.limitWhy...)

	if n := r.main.Errs.Total() + r.warm.Errs.Total(); n > 0 {
		fails = append(fails, fmt.Sprintf("%d unexpected errors", n))
		fmt.Fprintf(w, "\nErrors by kind:\n\n| kind: class | count | first |\n|---|--:|---|\n")
		for _, st := range []*Stats{r.warm, r.main} {
			prefix := ""
			if st == r.warm {
				prefix = "warm-up "
			}
			for _, l := range st.Errs.Lines() {
				fmt.Fprintf(w, "| %s%s | %d | %s |\n", prefix, l.Key, l.Count, cell(l.First))
			}
		}
	}

	var noisy []ErrorLine
	for _, l := range r.logLines {
		if k := strings.TrimPrefix(l.Key, "(as a load stopped) "); !strings.HasPrefix(k, "INFO ") && !strings.HasPrefix(k, "DEBUG ") {
			noisy = append(noisy, l)
		}
	}
	if len(noisy) > 0 {
		fmt.Fprintf(w, "\noutbound logged (level message: count, first line):\n\n")
		for _, l := range noisy[:min(len(noisy), 15)] {
			fmt.Fprintf(w, "- %s: %d, `%s`\n", l.Key, l.Count, l.First)
		}
	}
	if r.upLogN > 0 {
		fmt.Fprintf(w, "\nThe upstream's HTTP servers logged %d lines, first: %q\n", r.upLogN, r.upLogFirst)
	}
	if r.childErr != nil {
		fails = append(fails, fmt.Sprintf("outbound did not stop cleanly on SIGTERM: %v", r.childErr))
	}

	if len(fails) == 0 {
		fmt.Fprintf(w, "\nRESULT: PASS\n")
		return true
	}
	fmt.Fprintf(w, "\nRESULT: FAIL\n")
	for _, f := range fails {
		fmt.Fprintf(w, "- %s\n", f)
	}
	return false
}

func ms(d time.Duration) string {
	if d == 0 {
		return "—"
	}
	return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
}

// cell fits a message into one table cell.
func cell(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ", "\r", " ").Replace(truncate(strings.TrimSpace(s), 200))
}
