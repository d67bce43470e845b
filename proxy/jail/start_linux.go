package jail

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Pending is a jail that is built but has not started its command.
type Pending struct {
	cmd *exec.Cmd
	uc  *net.UnixConn
	tun *os.File
}

// Cmd is a command running in a jail.
type Cmd struct {
	cmd   *exec.Cmd
	stack *Stack
}

// Prepare builds the jail: namespaces, tun0, resolv.conf. It runs nothing
// of the command yet, so a kernel that refuses the jail is found out before
// anything else starts. An error names what the kernel refused; nothing is
// left running.
func Prepare(opts Options) (*Pending, error) {
	if len(opts.Argv) == 0 {
		return nil, errors.New("jail: no command")
	}
	if opts.HandshakeTimeout <= 0 {
		opts.HandshakeTimeout = 30 * time.Second
	}
	// The child is this executable again, at its hidden jail-child verb
	// (ChildMain); a test binary dispatches it from TestMain.
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("jail: finding outbound's own executable to re-run in the jail: %w", err)
	}
	resolv := filepath.Join(opts.Dir, "resolv.conf")
	if err = os.WriteFile(resolv, []byte(ResolvConf()), 0o644); err != nil {
		return nil, fmt.Errorf("jail: %w", err)
	}
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("jail: socket to the jail: %w", err)
	}
	parentEnd := os.NewFile(uintptr(pair[0]), "jail-socket")
	childEnd := os.NewFile(uintptr(pair[1]), "jail-socket")
	defer parentEnd.Close()

	cmd := exec.Command(self, append([]string{ChildVerb, "--resolv", resolv, "--"}, opts.Argv...)...)
	cmd.Env = []string{} // the command's environment comes with Start
	cmd.Stdin, cmd.Stdout, cmd.Stderr = opts.Stdin, opts.Stdout, opts.Stderr
	cmd.ExtraFiles = []*os.File{childEnd}
	cmd.SysProcAttr = sysProcAttr()
	err = cmd.Start()
	childEnd.Close()
	if err != nil {
		return nil, namespaceError(err)
	}
	p := &Pending{cmd: cmd}
	conn, err := net.FileConn(parentEnd)
	if err != nil {
		p.Abort()
		return nil, fmt.Errorf("jail: socket to the jail: %w", err)
	}
	p.uc = conn.(*net.UnixConn)
	_ = p.uc.SetDeadline(time.Now().Add(opts.HandshakeTimeout))
	if p.tun, err = receiveTUN(p.uc); err != nil {
		p.Abort()
		return nil, err
	}
	_ = p.uc.SetDeadline(time.Time{})
	return p, nil
}

// Abort ends a jail whose command never started.
func (p *Pending) Abort() {
	p.cmd.Process.Kill()
	p.cmd.Wait()
	if p.uc != nil {
		p.uc.Close()
	}
	if p.tun != nil {
		p.tun.Close()
	}
}

// Start runs the jail's stack and starts the command with env. On an error
// the jail is gone.
func (p *Pending) Start(env []string, stackOpts StackOptions) (*Cmd, error) {
	st, err := NewStack(p.tun, stackOpts)
	if err != nil {
		p.Abort()
		return nil, err
	}
	p.tun = nil // the stack owns it
	st.Start()
	// One message a variable: each is at most the kernel's 128 KiB limit for
	// one exec string, well under a socket buffer.
	msgs := [][]byte{{msgGo}}
	for _, kv := range env {
		msgs = append(msgs, append([]byte{msgVar}, kv...))
	}
	msgs = append(msgs, []byte{msgEnd})
	for _, m := range msgs {
		if _, err := p.uc.Write(m); err != nil {
			st.Close()
			p.Abort()
			return nil, fmt.Errorf("jail: starting the command: %w", err)
		}
	}
	p.uc.Close()
	return &Cmd{cmd: p.cmd, stack: st}, nil
}

// receiveTUN reads the child's answer: the TUN descriptor, or what failed.
func receiveTUN(uc *net.UnixConn) (*os.File, error) {
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := uc.ReadMsgUnix(buf, oob)
	if err != nil || n == 0 {
		return nil, errors.New("jail: the jail's setup ended without an answer")
	}
	if buf[0] == msgError {
		return nil, fmt.Errorf("jail: %s", buf[1:n])
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 || buf[0] != msgReady {
		return nil, errors.New("jail: the jail's setup sent no TUN device")
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return nil, errors.New("jail: the jail's setup sent no TUN device")
	}
	if err := unix.SetNonblock(fds[0], true); err != nil {
		unix.Close(fds[0])
		return nil, fmt.Errorf("jail: TUN device: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), TUN), nil
}

// sysProcAttr puts the child in new user, network and mount namespaces.
// Unprivileged, the user keeps its own uid and gid inside, and the child
// gets CAP_NET_ADMIN and CAP_SYS_ADMIN (in the new namespaces only) as
// ambient capabilities for the setup; it drops them before the command
// runs. As root, every id maps to itself: the command is root as before,
// but its capabilities are over the jail's namespaces only.
func sysProcAttr() *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET | syscall.CLONE_NEWNS,
		// A wrapper killed with SIGKILL cannot forward anything: the
		// kernel ends the jail with it.
		Pdeathsig: syscall.SIGKILL,
	}
	uid, gid := os.Getuid(), os.Getgid()
	if uid == 0 {
		attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1<<32 - 1}}
		attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1<<32 - 1}}
		attr.GidMappingsEnableSetgroups = true
		return attr
	}
	attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: uid, HostID: uid, Size: 1}}
	attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: gid, HostID: gid, Size: 1}}
	attr.AmbientCaps = []uintptr{unix.CAP_NET_ADMIN, unix.CAP_SYS_ADMIN}
	return attr
}

// namespaceError explains a refused clone in one line: which namespaces,
// and the setting that refuses them when one can be read.
func namespaceError(err error) error {
	why := ""
	for _, s := range []struct{ file, bad, say string }{
		{"/proc/sys/kernel/unprivileged_userns_clone", "0", "unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone = 0)"},
		{"/proc/sys/user/max_user_namespaces", "0", "user namespaces are disabled (user.max_user_namespaces = 0)"},
		{"/proc/sys/kernel/apparmor_restrict_unprivileged_userns", "1", "AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns = 1)"},
	} {
		if b, rerr := os.ReadFile(s.file); rerr == nil && strings.TrimSpace(string(b)) == s.bad {
			if s.bad == "1" || os.Getuid() != 0 || s.file == "/proc/sys/user/max_user_namespaces" {
				why = ": " + s.say
				break
			}
		}
	}
	if why == "" && (errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES)) {
		why = ": not permitted here (a container without CAP_SYS_ADMIN, or a seccomp filter)"
	}
	return fmt.Errorf("jail: the kernel refused new user, network and mount namespaces (%v)%s", errors.Unwrap(err), why)
}

// Process is the jailed command's process, for signals.
func (c *Cmd) Process() *os.Process { return c.cmd.Process }

// Wait waits for the command to exit, then stops the jail's stack.
func (c *Cmd) Wait() error {
	err := c.cmd.Wait()
	c.stack.Close()
	return err
}
