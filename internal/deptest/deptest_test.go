package deptest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

const module = "github.com/personad/personad"

// A rule says what the packages under one directory of the module must not
// reach. Patterns are import paths; a trailing "/..." also matches every
// package below it, as in the go command ("net" matches only net, not
// net/netip).
type rule struct {
	dir        string   // module-relative directory; the rule covers dir/...
	notDeps    []string // forbidden anywhere in the transitive dependencies
	notImports []string // forbidden as direct imports
	why        string
}

var wire = []string{
	module + "/proto/...",
	"google.golang.org/grpc/...",
}

// rules is the import direction of ARCHITECTURE.md:
// cmd → bidder → engine → (segments, rules, ledger); the engine never
// imports the wire.
var rules = []rule{
	{
		dir: "engine",
		notDeps: append(slices.Clone(wire),
			module+"/bidder/...",
			module+"/cmd/...",
			"net",
			"net/http/...",
		),
		notImports: []string{"os"},
		why:        "the engine is pure: no wire types, no network, no I/O",
	},
	{
		dir: "segments",
		notDeps: append(slices.Clone(wire),
			module+"/engine/...",
			module+"/bidder/...",
		),
		why: "segments sit below the engine and know nothing of the wire",
	},
	{
		dir: "rules",
		notDeps: append(slices.Clone(wire),
			module+"/engine/...",
			module+"/segments/...",
			module+"/bidder/...",
		),
		why: "rules are plain data, below the engine and beside segments",
	},
	{
		dir: "ledger",
		notDeps: append(slices.Clone(wire),
			module+"/engine/...",
			module+"/segments/...",
			module+"/bidder/...",
		),
		why: "the ledger sits below the engine; its Redis backend is plugged in by cmd",
	},
	{
		dir: "reload",
		notDeps: append(slices.Clone(wire),
			module+"/bidder/...",
			module+"/cmd/...",
		),
		why: "the reload pipeline feeds the engine; the wire calls it, not the reverse",
	},
	{
		dir:     "bidder",
		notDeps: []string{module + "/cmd/..."},
		why:     "flags, env and the logger are built only in cmd",
	},
	{
		dir:     ".",
		notDeps: []string{module + "/internal/tcpproxy"},
		why:     "internal/tcpproxy is a test helper: only tests import it",
	},
}

// forbiddenNames are package names that say nothing about what a package
// holds (the style guide's rule): a helper lives beside its first user.
var forbiddenNames = []string{"util", "utils", "common", "types", "models"}

// pkg is the part of `go list -json` output the guards read.
type pkg struct {
	ImportPath string
	Dir        string
	Name       string
	Doc        string
	Module     *struct{ Path string }
	GoFiles    []string
	CgoFiles   []string
	Imports    []string
	DepOnly    bool
	Error      *struct{ Err string }
}

func TestImportDirection(t *testing.T) {
	root := moduleRoot(t)
	for _, r := range rules {
		t.Run(r.dir, func(t *testing.T) {
			if _, err := os.Stat(filepath.Join(root, r.dir)); errors.Is(err, os.ErrNotExist) {
				// Packages still to be written (bidder, cmd/...) are
				// enforced from the moment their directory exists.
				t.Logf("%s/ does not exist yet; rule not enforced", r.dir)
				return
			}
			g := goListDeps(t, root, "./"+r.dir+"/...")
			if len(g.roots) == 0 {
				t.Logf("%s/ holds no Go package yet; rule not enforced", r.dir)
				return
			}
			for _, v := range r.violations(g) {
				t.Errorf("%s (%s)", v, r.why)
			}
		})
	}
}

// TestRuleMachinery proves the checker can fail, on the real graph of
// rules: forbidding one of its direct imports, and a package it reaches
// only through another, must report both with the chain that leads there,
// while a pattern rules never reaches stays quiet. The edges are taken from
// the graph itself so that the test does not break when rules changes its
// imports.
func TestRuleMachinery(t *testing.T) {
	g := goListDeps(t, moduleRoot(t), "./rules")
	if len(g.roots) != 1 || len(g.roots[0].Imports) == 0 {
		t.Fatalf("go list ./rules: want one package with imports, got %d roots", len(g.roots))
	}
	from := g.roots[0]
	direct := from.Imports[0]
	var indirect string
	for p := range g.pkgs {
		if p != from.ImportPath && !slices.Contains(from.Imports, p) && (indirect == "" || p < indirect) {
			indirect = p
		}
	}
	if indirect == "" {
		t.Fatalf("%s has no indirect dependency to test with", from.ImportPath)
	}
	r := rule{
		dir:        "rules",
		notDeps:    []string{indirect, module + "/cmd/..."},
		notImports: []string{direct},
	}
	got := r.violations(g)
	if len(got) != 2 {
		t.Fatalf("violations = %q, want 2 (depends on %s, imports %s)", got, indirect, direct)
	}
	chain := g.path(from.ImportPath, indirect)
	if len(chain) < 3 || chain[0] != from.ImportPath || chain[len(chain)-1] != indirect {
		t.Errorf("path(%s, %s) = %q, want a chain of 3 or more from one to the other", from.ImportPath, indirect, chain)
	}
	want := []string{
		fmt.Sprintf("%s must not depend on %s, but does: %s", from.ImportPath, indirect, strings.Join(chain, " → ")),
		fmt.Sprintf("%s must not import %s, but does", from.ImportPath, direct),
	}
	if !slices.Equal(got, want) {
		t.Errorf("violations = %q, want %q", got, want)
	}
}

// TestPath checks the import chain on a small graph: shortest path first.
func TestPath(t *testing.T) {
	g := graph{pkgs: map[string]pkg{
		"a": {ImportPath: "a", Imports: []string{"b", "c"}},
		"b": {ImportPath: "b", Imports: []string{"d"}},
		"c": {ImportPath: "c", Imports: []string{"x/y"}},
		"d": {ImportPath: "d", Imports: []string{"x/z"}},
	}}
	if got, want := g.path("a", "x/..."), []string{"a", "c", "x/y"}; !slices.Equal(got, want) {
		t.Errorf("path(a, x/...) = %q, want %q", got, want)
	}
	if got := g.path("b", "c"); got != nil {
		t.Errorf("path(b, c) = %q, want nil", got)
	}
}

func TestMatch(t *testing.T) {
	for _, tc := range []struct {
		pattern, path string
		want          bool
	}{
		{"net", "net", true},
		{"net", "net/netip", false},
		{"net/http/...", "net/http", true},
		{"net/http/...", "net/http/httptest", true},
		{"net/http/...", "net/httpx", false},
		{"google.golang.org/grpc/...", "google.golang.org/grpc", true},
		{"google.golang.org/grpc/...", "google.golang.org/grpc/codes", true},
		{"google.golang.org/grpc/...", "google.golang.org/grpcx", false},
		{module + "/proto/...", module + "/proto/personad/v1", true},
		{module + "/engine/...", module + "/engineering", false},
	} {
		if got := match(tc.pattern, tc.path); got != tc.want {
			t.Errorf("match(%q, %q) = %v, want %v", tc.pattern, tc.path, got, tc.want)
		}
	}
}

// violations lists, for each package under the rule's directory, each
// forbidden pattern it reaches, with the shortest import chain that reaches
// it (one line per package and pattern), and each forbidden direct import.
func (r rule) violations(g graph) []string {
	var out []string
	for _, p := range g.roots {
		for _, pat := range r.notDeps {
			if chain := g.path(p.ImportPath, pat); chain != nil {
				out = append(out, fmt.Sprintf("%s must not depend on %s, but does: %s",
					p.ImportPath, pat, strings.Join(chain, " → ")))
			}
		}
		for _, imp := range p.Imports {
			for _, pat := range r.notImports {
				if match(pat, imp) {
					out = append(out, fmt.Sprintf("%s must not import %s, but does", p.ImportPath, imp))
				}
			}
		}
	}
	return out
}

// graph is the non-test import graph of some packages of the module (the
// roots) and all their dependencies.
type graph struct {
	roots []pkg
	pkgs  map[string]pkg
}

// path returns the shortest import chain from the package from to a
// package matching pattern, or nil if from does not depend on one.
func (g graph) path(from, pattern string) []string {
	prev := map[string]string{from: ""}
	queue := []string{from}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		for _, imp := range g.pkgs[cur].Imports {
			if _, seen := prev[imp]; seen {
				continue
			}
			prev[imp] = cur
			if match(pattern, imp) {
				var chain []string
				for n := imp; n != ""; n = prev[n] {
					chain = append(chain, n)
				}
				slices.Reverse(chain)
				return chain
			}
			queue = append(queue, imp)
		}
	}
	return nil
}

func match(pattern, path string) bool {
	if prefix, ok := strings.CutSuffix(pattern, "/..."); ok {
		return path == prefix || strings.HasPrefix(path, prefix+"/")
	}
	return path == pattern
}

func TestNoVaguePackageNames(t *testing.T) {
	pkgs := goList(t, moduleRoot(t), "./...")
	if len(pkgs) == 0 {
		t.Fatal("go list ./... found no packages")
	}
	for _, p := range pkgs {
		if bad := vagueName(p); bad != "" {
			t.Errorf("%s: package named %q; name it for what it holds, or move the helper beside its user", p.ImportPath, bad)
		}
	}
}

func vagueName(p pkg) string {
	for _, n := range []string{p.Name, path.Base(p.ImportPath)} {
		if slices.Contains(forbiddenNames, n) {
			return n
		}
	}
	return ""
}

func TestPackageDocs(t *testing.T) {
	pkgs := goList(t, moduleRoot(t), "./...")
	checked := 0
	for _, p := range pkgs {
		if len(p.GoFiles)+len(p.CgoFiles) == 0 {
			continue // test-only package: nothing for go doc to show
		}
		checked++
		if msg := docProblem(p); msg != "" {
			t.Error(msg)
		}
	}
	if checked == 0 {
		t.Fatal("no package checked")
	}
}

// TestDocMachinery proves the doc check can fail.
func TestDocMachinery(t *testing.T) {
	for _, tc := range []struct {
		p    pkg
		fail bool
	}{
		{pkg{ImportPath: module + "/x", Name: "x", Doc: "Package x does things."}, false},
		{pkg{ImportPath: module + "/x", Name: "x", Doc: ""}, true},
		{pkg{ImportPath: module + "/x", Name: "x", Doc: "Does things."}, true},
		{pkg{ImportPath: module + "/x", Name: "x", Doc: "Package y does things."}, true},
		{pkg{ImportPath: module + "/cmd/personad", Name: "main", Doc: "Personad serves bids."}, false},
		{pkg{ImportPath: module + "/cmd/personactl", Name: "main", Doc: "Command personactl uploads segments."}, false},
		{pkg{ImportPath: module + "/cmd/personactl", Name: "main", Doc: "Package main is the CLI."}, true},
		{pkg{ImportPath: module + "/cmd/personactl", Name: "main", Doc: ""}, true},
	} {
		if got := docProblem(tc.p) != ""; got != tc.fail {
			t.Errorf("docProblem(%s, %q) failed = %v, want %v", tc.p.ImportPath, tc.p.Doc, got, tc.fail)
		}
	}
}

// docProblem reports a package whose doc comment go doc would not show as
// the package's story: "Package name ..." for a library, "Command name ..."
// or "Name ..." for a command.
func docProblem(p pkg) string {
	base := path.Base(p.ImportPath)
	if p.Name == "main" {
		if strings.HasPrefix(p.Doc, "Command "+base+" ") || strings.HasPrefix(p.Doc, capitalize(base)+" ") {
			return ""
		}
		return fmt.Sprintf("%s: command has no doc comment starting %q or %q (got %q); put one above package main in main.go or doc.go",
			p.ImportPath, "// Command "+base+" ", "// "+capitalize(base)+" ", p.Doc)
	}
	if strings.HasPrefix(p.Doc, "Package "+p.Name+" ") {
		return ""
	}
	return fmt.Sprintf("%s: no doc comment starting %q (got %q); add one in doc.go",
		p.ImportPath, "// Package "+p.Name+" ", p.Doc)
}

func capitalize(s string) string {
	r, n := utf8.DecodeRuneInString(s)
	return string(unicode.ToUpper(r)) + s[n:]
}

// moduleRoot is the directory holding personad's go.mod.
func moduleRoot(t *testing.T) string {
	t.Helper()
	out := goCmd(t, ".", "env", "GOMOD")
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		t.Fatal("not inside a module")
	}
	return filepath.Dir(gomod)
}

// goList returns the module's packages matching pattern. -e keeps a
// package that does not build in the list (with its name, doc and imports),
// so a half-edited tree is still checked.
func goList(t *testing.T, root, pattern string) []pkg {
	t.Helper()
	out := goCmd(t, root, "list", "-e", "-json", pattern)
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decoding go list output: %v", err)
		}
		if p.Module == nil || p.Module.Path != module {
			continue
		}
		if p.Error != nil && p.Name == "" {
			t.Errorf("go list %s: %s", p.ImportPath, p.Error.Err)
			continue
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// goListDeps returns the import graph of the module's packages matching
// pattern: `go list -deps` lists every package they reach, each with its
// own imports.
func goListDeps(t *testing.T, root, pattern string) graph {
	t.Helper()
	g := graph{pkgs: map[string]pkg{}}
	dec := json.NewDecoder(bytes.NewReader(goCmd(t, root, "list", "-e", "-deps", "-json", pattern)))
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decoding go list output: %v", err)
		}
		g.pkgs[p.ImportPath] = p
		if !p.DepOnly && p.Module != nil && p.Module.Path == module {
			g.roots = append(g.roots, p)
		}
	}
	return g
}

func goCmd(t *testing.T, dir string, args ...string) []byte {
	t.Helper()
	// go test puts its own GOROOT/bin first in PATH, so this is the same
	// toolchain that runs the test.
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out
}
