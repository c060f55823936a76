package segments

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// availableMemory returns the memory this process may use, in bytes: the
// machine's, or its cgroup's limit when lower (a container's, a systemd
// unit's MemoryMax), and says which; ok is false when it cannot tell.
func availableMemory() (total uint64, of string, ok bool) {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return 0, "", false
	}
	total, of = uint64(si.Totalram)*uint64(si.Unit), "the machine's"
	own, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return total, of, true
	}
	if limit, file, ok := cgroupLimit("/sys/fs/cgroup", own); ok && limit < total {
		total, of = limit, "the cgroup's ("+file+")"
	}
	return total, of, true
}

// cgroupLimit returns the lowest memory limit set on the cgroup that own
// (the text of /proc/self/cgroup) names and its ancestors, under root,
// where the cgroup file systems are mounted, and the file that sets it:
// memory.max (cgroup v2) or memory/…/memory.limit_in_bytes (v1). ok is
// false when none is set. Within a cgroup namespace (most containers) the
// process's cgroup is the mount's root; a path that does not exist under
// root is read as that root.
func cgroupLimit(root string, own []byte) (limit uint64, file string, ok bool) {
	sc := bufio.NewScanner(bytes.NewReader(own))
	for sc.Scan() {
		// hierarchy-ID:controller-list:cgroup-path
		f := strings.SplitN(sc.Text(), ":", 3)
		if len(f) != 3 {
			continue
		}
		var dir, name string
		switch {
		case f[0] == "0" && f[1] == "":
			dir, name = root, "memory.max"
		case slices.Contains(strings.Split(f[1], ","), "memory"):
			dir, name = filepath.Join(root, "memory"), "memory.limit_in_bytes"
		default:
			continue
		}
		leaf := filepath.Join(dir, filepath.FromSlash(f[2]))
		if _, err := os.Stat(leaf); err != nil {
			leaf = dir
		}
		for d := leaf; ; d = filepath.Dir(d) {
			if v, err := os.ReadFile(filepath.Join(d, name)); err == nil {
				if n, err := strconv.ParseUint(strings.TrimSpace(string(v)), 10, 64); err == nil && (!ok || n < limit) {
					limit, file, ok = n, filepath.Join(d, name), true // "max" (v2) is no limit
				}
			}
			if d == dir || len(d) <= len(dir) {
				break
			}
		}
	}
	// v1 writes "no limit" as the largest multiple of the page size.
	if ok && limit >= 1<<62 {
		return 0, "", false
	}
	return limit, file, ok
}
