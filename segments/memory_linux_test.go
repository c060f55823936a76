package segments

import (
	"os"
	"path/filepath"
	"testing"
)

// TestCgroupLimit: the lowest memory limit of the process's cgroup and
// its ancestors, in cgroup v2 and v1 trees, with "no limit" written as
// v2 and v1 write it, and a cgroup path that a namespace hides read as
// the mount's root.
func TestCgroupLimit(t *testing.T) {
	tree := func(t *testing.T, files map[string]string) string {
		root := t.TempDir()
		for name, v := range files {
			p := filepath.Join(root, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(v+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return root
	}
	const v1none = "9223372036854771712"
	for _, tc := range []struct {
		name  string
		files map[string]string
		own   string
		limit uint64
		file  string // under root
	}{
		{"v2 unit", map[string]string{
			"system.slice/memory.max":                  "max",
			"system.slice/personad.service/memory.max": "2147483648",
		}, "0::/system.slice/personad.service\n", 2 << 30, "system.slice/personad.service/memory.max"},
		{"v2 lower on a parent", map[string]string{
			"a/memory.max":   "1073741824",
			"a/b/memory.max": "4294967296",
		}, "0::/a/b\n", 1 << 30, "a/memory.max"},
		{"v2 no limit", map[string]string{
			"a/memory.max": "max",
		}, "0::/a\n", 0, ""},
		{"v2 in a namespace", map[string]string{
			"memory.max": "536870912",
		}, "0::/kubepods/pod1/c1\n", 512 << 20, "memory.max"},
		{"v1", map[string]string{
			"memory/memory.limit_in_bytes":        v1none,
			"memory/docker/memory.limit_in_bytes": "3221225472",
		}, "12:pids:/docker\n4:cpuset,memory:/docker\n0::/\n", 3 << 30, "memory/docker/memory.limit_in_bytes"},
		{"v1 no limit", map[string]string{
			"memory/memory.limit_in_bytes":   v1none,
			"memory/x/memory.limit_in_bytes": v1none,
		}, "4:memory:/x\n", 0, ""},
		{"nothing mounted", nil, "0::/\n", 0, ""},
		{"garbage", map[string]string{"memory.max": "a lot"}, "0::/\nnonsense\n", 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := tree(t, tc.files)
			limit, file, ok := cgroupLimit(root, []byte(tc.own))
			want := ""
			if tc.file != "" {
				want = filepath.Join(root, tc.file)
			}
			if limit != tc.limit || file != want || ok != (tc.limit > 0) {
				t.Errorf("cgroupLimit = %d, %q, %t; want %d, %q, %t", limit, file, ok, tc.limit, want, tc.limit > 0)
			}
		})
	}
	// This machine: some memory, and where the figure comes from.
	total, of, ok := availableMemory()
	if !ok || total == 0 || of == "" {
		t.Errorf("availableMemory = %d, %q, %t", total, of, ok)
	}
}
