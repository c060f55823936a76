package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestNoticeKey(t *testing.T) {
	dir := t.TempDir()
	info := &ledgerInfo{}
	k1, err := loadNoticeKey("", dir, info)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "notice.key")
	if info.createdKey != path || len(k1) != 32 {
		t.Errorf("created %q, key of %d bytes; want %s and 32 bytes", info.createdKey, len(k1), path)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file %v, %v; want mode 0600", fi, err)
	}
	info = &ledgerInfo{}
	k2, err := loadNoticeKey("", dir, info)
	if err != nil || !bytes.Equal(k1, k2) || info.createdKey != "" {
		t.Errorf("second start: key changed (%v) or was created again (%q)", err, info.createdKey)
	}
	// The same file given explicitly (another node) yields the same key.
	if k3, err := loadNoticeKey(path, "/nonexistent", &ledgerInfo{}); err != nil || !bytes.Equal(k1, k3) {
		t.Errorf("explicit file: %v, equal %t", err, bytes.Equal(k1, k3))
	}

	raw := filepath.Join(dir, "raw.key")
	os.WriteFile(raw, []byte("raw key bytes, not hex at all!!"), 0o600)
	if k, err := loadNoticeKey(raw, dir, &ledgerInfo{}); err != nil || string(k) != "raw key bytes, not hex at all!!" {
		t.Errorf("raw key: %q, %v", k, err)
	}
	short := filepath.Join(dir, "short.key")
	os.WriteFile(short, []byte("00112233\n"), 0o600)
	if _, err := loadNoticeKey(short, dir, &ledgerInfo{}); err == nil || !strings.Contains(err.Error(), "key has 4 bytes, want at least 16") {
		t.Errorf("short key: %v", err)
	}
	if _, err := loadNoticeKey(filepath.Join(dir, "missing.key"), dir, &ledgerInfo{}); err == nil || !strings.Contains(err.Error(), "--notice-key-file") {
		t.Errorf("missing explicit key file: %v, want an error (never generated in a place the operator named)", err)
	}
	open := &ledgerInfo{}
	os.Chmod(raw, 0o644)
	loadNoticeKey(raw, dir, open)
	if open.keyMode&0o077 == 0 {
		t.Errorf("mode %v of a world-readable key not reported", open.keyMode)
	}
}
