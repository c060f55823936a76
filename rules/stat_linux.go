//go:build linux

package rules

import (
	"os"
	"syscall"
)

// statKey is what tells that a file has not changed since it was last
// read: size, modification and change times, device and inode.
func statKey(fi os.FileInfo) (fileKey, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileKey{}, false
	}
	return fileKey{
		size:  fi.Size(),
		mtime: fi.ModTime().UnixNano(),
		ctime: int64(st.Ctim.Sec)*1e9 + int64(st.Ctim.Nsec), //nolint:unconvert // int32 on some platforms
		dev:   uint64(st.Dev),                               //nolint:unconvert // uint32 on some platforms
		ino:   uint64(st.Ino),                               //nolint:unconvert // uint32 on some platforms
	}, true
}
