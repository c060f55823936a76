package reload

import (
	"errors"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// openForWriting tells whether some process has name open for writing.
// It asks the kernel for a read lease (fcntl F_SETLEASE), which is
// refused with EAGAIN exactly then, and gives it back at once. Where no
// lease can be had (a file of another owner without CAP_LEASE, NFS,
// leases disabled) it answers false: the file is read as before.
func openForWriting(name string) bool {
	f, err := os.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	fd := int(f.Fd())
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETLEASE, unix.F_RDLCK); err != nil {
		return errors.Is(err, unix.EAGAIN)
	}
	unix.FcntlInt(uintptr(fd), unix.F_SETLEASE, unix.F_UNLCK) //nolint:errcheck // closing f releases it too
	return false
}
