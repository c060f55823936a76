package rules

import "sync"

// Parser parses rules files as [ParseFilesLocated] does, and remembers
// what it parsed for the next call: a file whose bytes did not change is
// not parsed again, and in a changed file only the campaign entries whose
// text changed are (see split.go), so that a reload after a one-campaign
// edit parses one campaign. What it remembers is what the last successful
// call saw (plus, after a failed one, what that one parsed).
//
// The rule sets it returns share their campaigns' slices and strings with
// each other: treat them as read-only. A Parser is safe for concurrent
// use; calls are serialised.
type Parser struct {
	mu      sync.Mutex
	files   map[string]parsedFile
	entries entryCache
	stats   ParseStats
}

type parsedFile struct {
	sum     Digest
	rs      *RuleSet
	entries []Digest // of its campaign entries, when parsed piecewise
}

// ParseStats say how much of a ParseFiles call was parsed rather than
// reused.
type ParseStats struct {
	Files       int // files given
	FilesParsed int // of those, files whose bytes had changed
	// Entries and EntriesParsed count the campaign entries of the
	// changed files that were parsed piecewise, and of those, the ones
	// whose text had changed.
	Entries, EntriesParsed int
}

// NewParser returns a Parser that remembers nothing yet.
func NewParser() *Parser { return &Parser{files: map[string]parsedFile{}} }

// ParseFiles is [ParseFilesLocated], reusing what did not change since
// the last call.
func (p *Parser) ParseFiles(files []File) (*RuleSet, Origins, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := ParseStats{Files: len(files)}
	next := make(map[string]parsedFile, len(files))
	p.entries.begin()
	rs, origins, err := parseFiles(files, func(f File) (*RuleSet, error) {
		d := f.Digest()
		if pf, ok := p.files[f.Name]; ok && pf.sum == d {
			next[f.Name] = pf
			p.entries.keep(pf.entries)
			return pf.rs, nil
		}
		st.FilesParsed++
		p.entries.file = nil
		rs, err := parse(f.Name, f.Data, &p.entries)
		if err != nil {
			return nil, err
		}
		next[f.Name] = parsedFile{sum: d, rs: rs, entries: p.entries.file}
		return rs, nil
	})
	st.Entries, st.EntriesParsed = p.entries.seen, p.entries.parsed
	p.entries.end(err == nil)
	if err != nil {
		for name, pf := range p.files {
			if _, ok := next[name]; !ok {
				next[name] = pf
			}
		}
	}
	p.files, p.stats = next, st
	return rs, origins, err
}

// Stats describes the last ParseFiles call.
func (p *Parser) Stats() ParseStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}
