package rules

import (
	"os"
	"sync"
	"time"
)

// Parser parses rules files as [ParseFilesLocated] does, and remembers
// what it parsed for the next call: a file whose bytes did not change is
// not parsed again, and in a changed file only the campaign entries whose
// text changed are (see split.go: a campaign entry is reused from the same
// file's previous version), so that a reload after a one-campaign edit
// parses one campaign. What it remembers is what the last successful call
// saw (plus, after a failed one, the files that one parsed).
//
// The rule sets it returns share their campaigns, and the campaigns'
// slices and strings, with each other and with what it remembers: treat
// them as read-only. A Parser is safe for concurrent use; calls are
// serialised (the Data of the files ReadFiles returns is valid until its
// next call).
type Parser struct {
	mu     sync.Mutex
	files  map[string]parsedFile
	stats  ParseStats
	digest Digest // of the files of the last ParseFiles
	// seen is what ReadFiles last saw of each file (the sum of a file
	// it read is set by the ParseFiles after it); read counts the
	// files it read, -1 once ParseFiles has used that count (no ReadFiles
	// since the last ParseFiles).
	seen map[string]seenFile
	read int
	// bufs hold what ReadFiles last read of each file it read: the next
	// call reads the file into the same memory.
	bufs map[string][]byte
	// racy is how recent a change may be for a file's stat to be
	// trusted next time (see ReadFiles).
	racy time.Duration
}

// fileKey is a file's identity and times; see statKey.
type fileKey struct {
	size, mtime, ctime int64
	dev, ino           uint64
}

type seenFile struct {
	key     fileKey
	sum     Digest
	trusted bool
}

type parsedFile struct {
	sum Digest
	rs  *RuleSet
	// entries are its campaign entries, in the order of rs.Campaigns,
	// when it was parsed piecewise: the next version of the file is cut
	// by them, and reuses the campaigns whose text it has.
	entries *entryTexts
}

// ParseStats say how much of a ParseFiles call was parsed rather than
// reused.
type ParseStats struct {
	Files       int // files given
	FilesRead   int // files the ReadFiles before it read (the others' stat told they had not changed)
	FilesParsed int // of the files given, those whose bytes had changed
	// Entries and EntriesParsed count the campaign entries of the
	// changed files that were parsed piecewise, and of those, the ones
	// whose text had changed.
	Entries, EntriesParsed int
}

// NewParser returns a Parser that remembers nothing yet.
func NewParser() *Parser {
	return &Parser{files: map[string]parsedFile{}, seen: map[string]seenFile{}, read: -1, racy: 2 * time.Second}
}

// ReadFiles is [ReadFiles] for ParseFiles, reading only the files that
// may have changed since the last call: a file whose size, modification
// and change times, device and inode are what they were comes back with
// its Sum and no Data (ParseFiles knows its rule set by that Sum). The
// files it reads come back without a Sum: ParseFiles computes their
// digests, most often from those of the files' pieces, which it computes
// anyway, rather than hashing each file whole first. A file's stat is
// trusted only once it was read when its last change was at least two
// seconds old: file times are coarse (a few milliseconds),
// so two writes of the same size within one tick look alike — the second
// is caught because the first left the file untrusted. Where the change
// time and inode are not known (not Linux), every file is read.
//
// The Data of the files it returns is valid until the next ReadFiles
// call, which may read into the same memory: a 32 MB file is not read
// into 32 MB of new garbage at every reload. Nothing ParseFiles returns
// or remembers refers to it.
func (p *Parser) ReadFiles(path string) ([]File, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	next := make(map[string]seenFile, len(p.seen))
	bufs := make(map[string][]byte, len(p.bufs))
	defer func() { p.bufs = bufs }()
	read := 0
	files, err := readFiles(path, func(name string) (File, error) {
		fi, err := os.Stat(name)
		if err != nil {
			return readFile(name) // for its error
		}
		key, ok := statKey(fi)
		if s, seen := p.seen[name]; ok && seen && s.trusted && s.key == key && s.sum != (Digest{}) {
			next[name] = s
			return File{Name: name, ModTime: fi.ModTime(), Sum: s.sum}, nil
		}
		f, err := readFileInto(name, p.bufs[name])
		if err != nil {
			return File{}, err
		}
		bufs[name] = f.Data
		read++
		if ok {
			// key was taken before the read: a change after it shows as
			// another key next time.
			old := now.Add(-p.racy).UnixNano()
			// ParseFiles sets the sum.
			next[name] = seenFile{key: key, trusted: key.ctime < old && key.mtime < old}
		}
		return f, nil
	})
	if err != nil {
		return nil, err
	}
	p.seen, p.read = next, read
	return files, nil
}

// ParseFiles is [ParseFilesLocated], reusing what did not change since
// the last call.
func (p *Parser) ParseFiles(files []File) (*RuleSet, Origins, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := ParseStats{Files: len(files), FilesRead: p.read}
	if p.read < 0 { // no ReadFiles before: every file was read
		st.FilesRead = len(files)
	}
	p.read = -1
	// Each file's parse writes only its own index of these.
	parsed := make([]parsedFile, len(files))
	counts := make([]ParseStats, len(files))
	sums := make([]Digest, len(files))
	rs, origins, err := parseFiles(files, func(i int, f File) (*RuleSet, error) {
		pf, known := p.files[f.Name]
		if f.Sum != (Digest{}) {
			if known && pf.sum == f.Sum {
				sums[i], parsed[i] = f.Sum, pf
				return pf.rs, nil
			}
			if f.Data == nil {
				// From ReadFiles unread, yet not remembered: read it now.
				rf, err := readFile(f.Name)
				if err != nil {
					return nil, err
				}
				f = rf
			}
		}
		// A file's digest is that of its pieces when it is parsed
		// piecewise, which also tells whether it changed; otherwise
		// that of its bytes (fileSum), which for a file that was not
		// parsed piecewise last time tells it first.
		var whole Digest
		if known && pf.entries == nil {
			if whole = fileSum(f.Data); whole == pf.sum {
				sums[i], parsed[i] = whole, pf
				return pf.rs, nil
			}
		}
		cache := &entryCache{}
		if pf.entries != nil {
			cache.old, cache.campaigns, cache.prevSum = pf.entries, pf.rs.Campaigns, pf.sum
		}
		rs, err := parse(f.Name, f.Data, cache)
		d := cache.sum
		if d == (Digest{}) {
			if whole == (Digest{}) {
				whole = fileSum(f.Data)
			}
			d = whole
		}
		sums[i] = d
		if cache.same {
			parsed[i] = pf
			return pf.rs, nil
		}
		counts[i] = ParseStats{FilesParsed: 1, Entries: cache.seen, EntriesParsed: cache.parsed}
		if err != nil {
			return nil, err
		}
		parsed[i] = parsedFile{sum: d, rs: rs, entries: cache.next}
		return rs, nil
	})
	p.digest = filesDigest(files, sums)
	// Remember the sums of the files ReadFiles read, for the next
	// ReadFiles to return them unread while their stat does not change.
	for i := range files {
		f := &files[i]
		if s, ok := p.seen[f.Name]; ok && s.sum == (Digest{}) && sameMemory(f.Data, p.bufs[f.Name]) {
			s.sum = sums[i]
			p.seen[f.Name] = s
		}
	}
	for _, c := range counts {
		st.FilesParsed += c.FilesParsed
		st.Entries += c.Entries
		st.EntriesParsed += c.EntriesParsed
	}
	if err == nil && len(files) > 1 {
		// Remember each file's campaigns as the merged set holds them:
		// the arrays the files were parsed into are then garbage at once
		// (at 100,000 campaigns, 31 MB of pointers fewer for every
		// collection to scan until the next reload). Every file, the
		// unchanged ones too, so that none keeps an older set's array.
		for i := range parsed {
			if pf := &parsed[i]; pf.rs != nil {
				own := *pf.rs
				lo, hi := origins[i].First, origins[i].First+len(own.Campaigns)
				own.Campaigns = rs.Campaigns[lo:hi:hi]
				pf.rs = &own
			}
		}
	}
	next := make(map[string]parsedFile, len(files))
	for i, pf := range parsed {
		if pf.rs != nil {
			next[files[i].Name] = pf
		}
	}
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

// Digest is a digest of the names and contents of the files the last
// ParseFiles call was given (also when it failed), which [FilesDigest]
// gives too when it knows every file's Sum: equal digests mean the same
// files with the same bytes. A caller that shares the Parser serialises
// its ParseFiles and Digest calls (the reload Manager holds its lock).
func (p *Parser) Digest() Digest {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.digest
}

// Stats describes the last ParseFiles call.
func (p *Parser) Stats() ParseStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// sameMemory reports whether a and b are the same bytes in memory: a
// file's Data is what ReadFiles read into its buffer.
func sameMemory(a, b []byte) bool {
	return len(a) == len(b) && cap(a) > 0 && cap(b) > 0 && &a[:1][0] == &b[:1][0]
}
