package bolt

// Who holds the database: bbolt locks its file for as long as a process has
// it open, and says only "timeout" to the next one. The holder writes its pid
// beside the database so the next one can name it.

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"
)

// OwnerSuffix names the file beside the database (outbound.db.pid) that
// holds the pid of the process that has it open.
const OwnerSuffix = ".pid"

// lockWait is how long Open waits for another process to let go of the
// database before it reports who holds it.
const lockWait = time.Second

// ErrInUse is wrapped by Open's error when another process holds the
// database.
var ErrInUse = errors.New("in use by another outbound")

// inUseError names what is held ("state dir D", "store F") and by whom.
type inUseError struct {
	what string
	pid  int // 0: unknown
}

func (e *inUseError) Error() string {
	if e.pid == 0 {
		return fmt.Sprintf("%s is %v (pid unknown)", e.what, ErrInUse)
	}
	return fmt.Sprintf("%s is %v (pid %d)", e.what, ErrInUse, e.pid)
}

func (e *inUseError) Unwrap() error { return ErrInUse }

// inUse is the error for a database at path another process holds.
func inUse(path string) error {
	pid, _ := readOwner(path)
	return &inUseError{what: "store " + path, pid: pid}
}

// checkDir makes dir if it is missing and refuses anything but a directory.
func checkDir(dir string) error {
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create state dir %s: %w", dir, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("state dir %s: %w", dir, err)
	case !st.IsDir():
		return fmt.Errorf("state dir %s is not a directory", dir)
	}
	return nil
}

func readOwner(path string) (int, bool) {
	b, err := os.ReadFile(path + OwnerSuffix)
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b)))
	return pid, err == nil && pid > 0
}

// writeOwner records this process as the holder. It is called with the
// database lock held, so no other outbound writes the file meanwhile.
func writeOwner(path string) error {
	p := path + OwnerSuffix
	if err := os.WriteFile(p, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	return nil
}

// removeOwner deletes the pid file if it still names this process; it is
// called before the lock is released.
func removeOwner(path string) {
	if pid, ok := readOwner(path); ok && pid == os.Getpid() {
		os.Remove(path + OwnerSuffix)
	}
}
