package watch

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// watchDir reports changes to the files of dir (a hook's atomic rename, a
// removal) on the returned channel, coalesced, until closed.
func watchDir(dir string) (<-chan struct{}, func(), error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, nil, fmt.Errorf("inotify: %w", err)
	}
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE|unix.IN_DELETE|unix.IN_MOVED_TO|unix.IN_MOVED_FROM|unix.IN_CLOSE_WRITE); err != nil {
		unix.Close(fd)
		return nil, nil, fmt.Errorf("watching %s: %w", dir, err)
	}
	// Non-blocking and wrapped in an os.File, the descriptor is in Go's
	// poller: Close wakes the reader.
	f := os.NewFile(uintptr(fd), "inotify")
	changed := make(chan struct{}, 1)
	go func() {
		buf := make([]byte, 4096)
		for {
			if _, err := f.Read(buf); err != nil {
				return
			}
			select {
			case changed <- struct{}{}:
			default:
			}
		}
	}()
	return changed, func() { f.Close() }, nil
}
