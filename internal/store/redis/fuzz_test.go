package redis

import (
	"strings"
	"testing"

	"github.com/outbound-dev/outbound/internal/store"
)

// FuzzChangeMessage: every change survives the feed's encoding, whatever
// bytes its binding and key hold, and any payload decodes or fails
// without panicking.
func FuzzChangeMessage(f *testing.F) {
	f.Add(uint8(store.KVChanged), "", "CACHE", "a/b\\x00\\xff")
	f.Add(uint8(store.OverridesChanged), "sbx-1", "", "")
	f.Add(uint8(99), "x", "", "")
	s := &Store{origin: "me"}
	f.Fuzz(func(t *testing.T, kind uint8, id, binding, key string) {
		c := store.Change{Kind: store.ChangeKind(kind), ID: id}
		if c.Kind == store.KVChanged {
			c.ID, c.Binding, c.Key = "", binding, key
		}
		got, origin, err := decodeMessage(s.encode(c))
		valid := c.Kind == store.KVChanged || (c.Kind >= store.InstanceCreated && c.Kind <= store.HomeChanged && c.Kind != store.KVChanged && id != "")
		if !valid {
			if err == nil {
				t.Fatalf("%+v decoded as %+v", c, got)
			}
			return
		}
		c.Remote = true
		if err != nil || origin != "me" || got != c {
			t.Fatalf("%+v came back as %+v from %q: %v", c, got, origin, err)
		}
		decodeMessage(binding + key) // arbitrary payloads: no panic
	})
}

// FuzzParseURL: whatever the URL, an error never shows its password.
func FuzzParseURL(f *testing.F) {
	for _, u := range []string{"redis://h:1/0", "rediss://u:p@h:6380/2", "redis://:p@[::1", "redis://h:1/x?tls_ca=/nope", "redis://h:1/0?dial_timeout=zz"} {
		f.Add(u, "hunter2hunter2")
	}
	f.Fuzz(func(t *testing.T, raw, pass string) {
		if len(pass) < 8 || strings.Trim(pass, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") != "" {
			return
		}
		// The oracle: the same URL with another password of the same shape.
		// Both must fail or not, and the password may not show more often
		// than it does there: the rest of the URL may spell it ("%D0" +
		// "0000000" holds "00000000"), and redaction may blank such a
		// spelling too, which shows nothing.
		other := strings.Repeat("q", len(pass))
		if other == pass {
			other = strings.Repeat("r", len(pass))
		}
		withPass := func(p string) error {
			_, _, err := ParseURL(strings.Replace(raw, "://", "://user:"+p+"@", 1))
			return err
		}
		err, errOther := withPass(pass), withPass(other)
		if (err == nil) != (errOther == nil) {
			t.Fatalf("the password changes the outcome for %q: %v / %v", raw, err, errOther)
		}
		if err != nil && strings.Count(err.Error(), pass) > strings.Count(errOther.Error(), pass) {
			t.Fatalf("the error for %q shows the password: %v", raw, err)
		}
	})
}
