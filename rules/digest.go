package rules

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"math"
	"sync"

	"github.com/cespare/xxhash/v2"

	"github.com/personad/personad/internal/par"
)

// Digest is a content hash of part of a rule set: the xxhash64 of a
// canonical binary encoding (every field, length-prefixed, in declaration
// order) and the encoding's length. Equal content gives equal digests in
// every process. It is not a cryptographic hash: it tells versions of one
// campaign apart, it does not defend against forgery.
type Digest [16]byte

func (d Digest) String() string { return hex.EncodeToString(d[:]) }

// sum is the Digest of an encoding held whole (or of any bytes).
func sum(b []byte) Digest { return makeDigest(xxhash.Sum64(b), uint64(len(b))) }

// fileSum is the Digest of a file's bytes, as File.Sum: for a large file,
// the xxhash of its consecutive pieces' xxhashes, computed on every CPU,
// and its length. It is another function than sum (equal bytes give
// equal digests of each, not of both), so a file's digest is only ever
// compared with file digests.
func fileSum(b []byte) Digest {
	if len(b) <= sumPiece {
		return sum(b)
	}
	n := (len(b) + sumPiece - 1) / sumPiece
	hs := make([]byte, 8*n)
	par.For(n, 1, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			binary.LittleEndian.PutUint64(hs[8*i:], xxhash.Sum64(b[i*sumPiece:min((i+1)*sumPiece, len(b))]))
		}
	})
	return makeDigest(xxhash.Sum64(hs), uint64(len(b)))
}

// FilesDigest is a digest of files' names and Sums, or false when a
// file's Sum is not known ([Parser.ReadFiles] does not set it for the
// files it reads; [Parser.Digest] is the digest of those files once
// parsed). Equal digests mean the same files with the same bytes.
func FilesDigest(files []File) (Digest, bool) {
	sums := make([]Digest, len(files))
	for i := range files {
		if sums[i] = files[i].Sum; sums[i] == (Digest{}) {
			return Digest{}, false
		}
	}
	return filesDigest(files, sums), true
}

// filesDigest is FilesDigest with the files' digests given.
func filesDigest(files []File, sums []Digest) Digest {
	h := xxhash.New()
	var n [8]byte
	for i := range files {
		binary.LittleEndian.PutUint64(n[:], uint64(len(files[i].Name)))
		h.Write(n[:])
		h.WriteString(files[i].Name)
		h.Write(sums[i][:])
	}
	return makeDigest(h.Sum64(), uint64(len(files)))
}

// piecesSum is the Digest of a file of n bytes cut into pieces (s), from
// the entries' digests: a file parsed piecewise is not hashed whole a
// second time. Like fileSum it is a digest of the file's bytes — the
// pieces cover them in order, and equal bytes are cut alike — but
// another function of them: which of the two a file's digest is depends
// on whether it is parsed piecewise, which its bytes decide.
func piecesSum(n int, s split, digests []Digest) Digest {
	h := xxhash.New()
	h.WriteString("pieces")
	head, tail := sum(s.rest[:s.head]), sum(s.rest[s.head:])
	h.Write(head[:])
	for i := range digests {
		h.Write(digests[i][:])
	}
	h.Write(tail[:])
	return makeDigest(h.Sum64(), uint64(n))
}

// sumPiece is the size of the pieces of a large file that fileSum hashes
// apart.
const sumPiece = 1 << 20

// makeDigest is the Digest of n bytes whose xxhash is h.
func makeDigest(h, n uint64) Digest {
	var d Digest
	binary.LittleEndian.PutUint64(d[:8], h)
	binary.LittleEndian.PutUint64(d[8:], n)
	return d
}

// encoder produces the canonical encoding into an xxhash digest as it
// goes, never holding all of it: short fields gather in buf, and a long
// string — a creative's adm, most of a campaign's bytes — is hashed where
// it lies instead of being copied. xxhash over the pieces equals xxhash
// over their concatenation, so the digest is the encoding's.
type encoder struct {
	h   xxhash.Digest
	n   uint64 // bytes encoded
	buf []byte
}

// direct is the length from which a string is hashed in place.
const direct = 64

var encoders = sync.Pool{New: func() any { return &encoder{buf: make([]byte, 0, 512)} }}

func newEncoder() *encoder {
	e := encoders.Get().(*encoder)
	e.h.Reset()
	e.n, e.buf = 0, e.buf[:0]
	return e
}

// digest returns the digest of what e encoded and releases e.
func (e *encoder) digest() Digest {
	e.flush()
	d := makeDigest(e.h.Sum64(), e.n)
	encoders.Put(e)
	return d
}

func (e *encoder) flush() {
	e.h.Write(e.buf)
	e.n += uint64(len(e.buf))
	e.buf = e.buf[:0]
}

func (e *encoder) uvarint(v int) { e.buf = binary.AppendUvarint(e.buf, uint64(v)) }

func (e *encoder) string(s string) {
	e.uvarint(len(s))
	if len(s) < direct {
		e.buf = append(e.buf, s...)
		return
	}
	e.flush()
	e.h.WriteString(s)
	e.n += uint64(len(s))
}

func (e *encoder) strings(ss []string) {
	e.uvarint(len(ss))
	for _, s := range ss {
		e.string(s)
	}
}

func (e *encoder) float(f float64) {
	e.buf = binary.LittleEndian.AppendUint64(e.buf, math.Float64bits(f))
}

func (e *encoder) int(v int32) { e.buf = binary.AppendVarint(e.buf, int64(v)) }

func (e *encoder) clauses(cs []Clause) {
	e.uvarint(len(cs))
	for _, c := range cs {
		e.string(c.Facet)
		e.strings(c.Any)
	}
}

// campaign encodes every field of c. A field added to Campaign must be
// added here: TestDigestCoversEveryField fails until it is.
func (e *encoder) campaign(c *Campaign) {
	e.string(c.ID)
	e.string(c.Advertiser)
	e.strings(c.Adomain)
	e.string(c.Status)
	e.string(c.Start)
	e.string(c.End)
	if c.Priority == nil {
		e.buf = append(e.buf, 0)
	} else {
		e.buf = append(e.buf, 1)
		e.int(*c.Priority)
	}
	e.float(c.BidCPM)
	e.string(c.Currency)
	e.float(c.Budget.Daily)
	e.float(c.Budget.Total)
	e.string(c.Pacing)
	e.int(c.FrequencyCap.Max)
	e.string(c.FrequencyCap.Window)
	e.strings(c.Cat)
	e.clauses(c.Targeting.All)
	e.clauses(c.Targeting.None)
	e.strings(c.Targeting.Channels)
	e.uvarint(len(c.Creatives))
	for i := range c.Creatives {
		e.creative(&c.Creatives[i])
	}
}

func (e *encoder) creative(cr *Creative) {
	e.string(cr.ID)
	e.int(cr.W)
	e.int(cr.H)
	e.strings(cr.Channels)
	e.strings(cr.Cat)
	e.clauses(cr.Persona)
	e.string(cr.Adm)
}

// Digest is the content hash of c: campaigns with equal digests compile
// alike.
func (c *Campaign) Digest() Digest {
	e := newEncoder()
	e.campaign(c)
	return e.digest()
}

// Digest is the content hash of cr.
func (cr *Creative) Digest() Digest {
	e := newEncoder()
	e.creative(cr)
	return e.digest()
}

// Digest is the content hash of the content rules.
func (cr *ContentRules) Digest() Digest {
	e := newEncoder()
	e.strings(cr.BlockedCat)
	e.strings(cr.BlockedAdomain)
	e.uvarint(len(cr.ChannelMap))
	for _, m := range cr.ChannelMap {
		e.string(m.Channel)
		e.strings(m.Domains)
		e.strings(m.Bundles)
	}
	return e.digest()
}

// Digests returns the digest of every campaign, in order, and of the
// content rules. Large sets are hashed on every CPU.
func (rs *RuleSet) Digests() (campaigns []Digest, content Digest) {
	campaigns = make([]Digest, len(rs.Campaigns))
	par.For(len(rs.Campaigns), 1024, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			campaigns[i] = rs.Campaigns[i].Digest()
		}
	})
	return campaigns, rs.ContentRules.Digest()
}

// Version is the content hash of the whole rule set: the first 12 hex
// digits of SHA-256 over its campaigns' digests, in order, and its content
// rules' digest.
func (rs *RuleSet) Version() string {
	cs, cr := rs.Digests()
	return VersionOf(cs, cr)
}

// VersionOf is [RuleSet.Version] from digests already computed.
func VersionOf(campaigns []Digest, content Digest) string {
	h := sha256.New()
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(campaigns)))
	h.Write(n[:])
	for i := range campaigns {
		h.Write(campaigns[i][:])
	}
	h.Write(content[:])
	return hex.EncodeToString(h.Sum(nil)[:6])
}
