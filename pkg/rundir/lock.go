package rundir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// LockFile is the lock's file inside the folder.
const LockFile = "lock"

// DefaultLockTimeout is how long a writer waits for the lock. A hook holds
// it for milliseconds; the longest holder, a conntrack reconcile of a quarter
// million flows, for about a second. Half a minute means a holder is hung.
const DefaultLockTimeout = 30 * time.Second

// Lock is the lock every ifisp writer holds while it changes the kernel or
// the folder: every hook run (ifup of several interfaces at once, as
// ifup@IFACE.service does at boot, runs the hooks one at a time) and every
// change ifisp-watch makes. It is an flock(2), so the kernel releases it
// when its holder dies, however it dies.
type Lock struct {
	f *os.File
}

// TakeLock waits up to timeout for the lock and takes it. who (e.g.
// "ifisp-snat wana inet pre-up") is written into the lock file, so that a
// writer that times out can say who holds it.
func TakeLock(who string, timeout time.Duration) (*Lock, error) {
	dir := Dir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cannot make the run directory %s: %w (is /run writable? %s moves it)", dir, pathErr(err), Env)
	}
	path := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("cannot open the lock %s: %w (is the run directory writable? %s moves it)", path, pathErr(err), Env)
	}
	deadline := time.Now().Add(timeout)
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		if time.Now().After(deadline) {
			holder := "a process that did not say who it is"
			if b, _ := os.ReadFile(path); len(strings.TrimSpace(string(b))) > 0 {
				holder = strings.TrimSpace(string(b))
			}
			f.Close()
			return nil, fmt.Errorf("waited %v for the lock %s, held by %s: if that is hung, kill it; ifisp's next ifup or ifdown of its interface repairs what it left", timeout, path, holder)
		}
		time.Sleep(wait)
	}
	// Who holds it, for the error above; a failure to say so is no reason
	// not to go on.
	if err := f.Truncate(0); err == nil {
		fmt.Fprintf(f, "%s (pid %d, since %s)\n", who, os.Getpid(), time.Now().Format("15:04:05.000"))
	}
	return &Lock{f: f}, nil
}

// pathErr strips the path an *fs.PathError repeats: the messages above
// name it already.
func pathErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// Release gives the lock up.
func (l *Lock) Release() {
	l.f.Truncate(0)
	l.f.Close()
}

// Locked runs f holding the lock, waiting for it at most timeout.
func Locked(who string, timeout time.Duration, f func() error) error {
	lk, err := TakeLock(who, timeout)
	if err != nil {
		return err
	}
	defer lk.Release()
	return f()
}
