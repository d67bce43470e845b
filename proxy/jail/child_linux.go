package jail

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// childSocketFD is the Unix socket to the parent in the child (the first
// of exec.Cmd.ExtraFiles).
const childSocketFD = 3

// Messages on the socket: the child sends msgReady with the TUN descriptor
// or msgError and a text; once its stack runs the parent answers msgGo, one
// msgVar per variable of the command's environment, and msgEnd.
const (
	msgReady = 'K'
	msgError = 'E'
	msgGo    = 'G'
	msgVar   = 'V'
	msgEnd   = 'Z'
)

// ChildMain is the hidden `outbound jail-child --resolv PATH -- CMD ARGS...`
// command, started by Start in new user, network and mount namespaces. It
// builds the jail's network, passes the TUN descriptor to the parent, and
// when the parent says go, becomes CMD. It returns only on failure.
func ChildMain(args []string, stderr io.Writer) int {
	if len(args) < 4 || args[0] != "--resolv" || args[2] != "--" {
		fmt.Fprintln(stderr, "outbound jail-child: internal command, started by outbound run --jail")
		return 2
	}
	resolv, argv := args[1], args[3:]
	sock := os.NewFile(childSocketFD, "jail-socket")
	tun, warning, err := buildNetwork(resolv)
	if err != nil {
		unix.Write(childSocketFD, append([]byte{msgError}, err.Error()...))
		return 1
	}
	if warning != "" {
		fmt.Fprintf(stderr, "outbound run: --jail: %s\n", warning)
	}
	if err := unix.Sendmsg(childSocketFD, []byte{msgReady}, unix.UnixRights(int(tun.Fd())), nil, 0); err != nil {
		fmt.Fprintf(stderr, "outbound run: --jail: handing the TUN device to outbound: %v\n", err)
		return 1
	}
	tun.Close()
	env, err := receiveEnv()
	if err != nil {
		fmt.Fprintf(stderr, "outbound run: --jail: %v\n", err)
		return 1
	}
	sock.Close()
	// Capabilities raised for the setup (unprivileged case) end here: the
	// command keeps none of them.
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil && !errors.Is(err, unix.EINVAL) {
		fmt.Fprintf(stderr, "outbound run: --jail: dropping capabilities: %v\n", err)
		return 1
	}
	// LookPath searches the command's PATH, as exec.Command does in run.
	os.Clearenv()
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			os.Setenv(k, v)
		}
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		fmt.Fprintf(stderr, "outbound run: starting %s: %v\n", argv[0], err)
		return 127
	}
	err = syscall.Exec(path, argv, env)
	fmt.Fprintf(stderr, "outbound run: starting %s: %v\n", argv[0], err)
	return 127
}

// receiveEnv waits for the parent's go-ahead and the command's environment.
func receiveEnv() ([]string, error) {
	buf := make([]byte, 256<<10)
	n, err := unix.Read(childSocketFD, buf)
	if err != nil || n != 1 || buf[0] != msgGo {
		return nil, errors.New("outbound went away before the command started")
	}
	var env []string
	for {
		n, err := unix.Read(childSocketFD, buf)
		if err != nil {
			return nil, fmt.Errorf("receiving the command's environment: %w", err)
		}
		switch {
		case n == 1 && buf[0] == msgEnd:
			return env, nil
		case n > 0 && buf[0] == msgVar:
			env = append(env, string(buf[1:n]))
		default:
			return nil, errors.New("outbound went away before the command started")
		}
	}
}

// buildNetwork makes the jail's network in the current (new) namespaces:
// loopback up, tun0 with the jail's addresses and every route, and
// /etc/resolv.conf pointing at outbound. A failed resolv.conf bind is a
// warning: DNS to any address is answered by outbound anyway.
func buildNetwork(resolv string) (tun *os.File, warning string, err error) {
	lo, err := netlink.LinkByName("lo")
	if err == nil {
		err = netlink.LinkSetUp(lo)
	}
	if err != nil {
		return nil, "", fmt.Errorf("the kernel refused to bring up the jail's loopback: %w", err)
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, "", fmt.Errorf("no TUN device: open /dev/net/tun: %w", err)
	}
	tun = os.NewFile(uintptr(fd), "/dev/net/tun")
	defer func() {
		if err != nil {
			tun.Close()
		}
	}()
	ifr, err := unix.NewIfreq(TUN)
	if err != nil {
		return nil, "", err
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return nil, "", fmt.Errorf("the kernel refused a TUN device (TUNSETIFF %s): %w", TUN, err)
	}
	link, err := netlink.LinkByName(TUN)
	if err != nil {
		return nil, "", fmt.Errorf("finding %s: %w", TUN, err)
	}
	if err := netlink.LinkSetMTU(link, MTU); err != nil {
		return nil, "", fmt.Errorf("setting %s's MTU: %w", TUN, err)
	}
	if err := netlink.AddrAdd(link, &netlink.Addr{IPNet: hostNet(Self.AsSlice())}); err != nil {
		return nil, "", fmt.Errorf("adding %s to %s: %w", Self, TUN, err)
	}
	// IPv6 may be disabled in the kernel; then there is no IPv6 to capture.
	v6 := netlink.AddrAdd(link, &netlink.Addr{IPNet: hostNet(Self6.AsSlice()), Flags: unix.IFA_F_NODAD}) == nil
	if err := netlink.LinkSetUp(link); err != nil {
		return nil, "", fmt.Errorf("bringing up %s: %w", TUN, err)
	}
	routes := []*net.IPNet{{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}}
	if v6 {
		routes = append(routes, &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)})
	}
	for _, dst := range routes {
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Dst: dst, Scope: netlink.SCOPE_LINK}); err != nil {
			return nil, "", fmt.Errorf("routing %s through %s: %w", dst, TUN, err)
		}
	}
	// Mounts made here must not propagate back to the host.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return nil, "", fmt.Errorf("the kernel refused a private mount namespace: %w", err)
	}
	if err := unix.Mount(resolv, "/etc/resolv.conf", "", unix.MS_BIND, ""); err != nil {
		warning = fmt.Sprintf("could not point /etc/resolv.conf at outbound (%v); DNS to any address still reaches outbound", err)
	}
	return tun, warning, nil
}

func hostNet(ip net.IP) *net.IPNet {
	return &net.IPNet{IP: ip, Mask: net.CIDRMask(len(ip)*8, len(ip)*8)}
}
