package rules

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"math"
	"runtime"
	"sync"

	"github.com/cespare/xxhash/v2"
)

// Digest is a content hash of part of a rule set: the xxhash64 of a
// canonical binary encoding (every field, length-prefixed, in declaration
// order) and the encoding's length. Equal content gives equal digests in
// every process. It is not a cryptographic hash: it tells versions of one
// campaign apart, it does not defend against forgery.
type Digest [16]byte

func (d Digest) String() string { return hex.EncodeToString(d[:]) }

func sum(b []byte) Digest {
	var d Digest
	binary.LittleEndian.PutUint64(d[:8], xxhash.Sum64(b))
	binary.LittleEndian.PutUint64(d[8:], uint64(len(b)))
	return d
}

var canonPool = sync.Pool{New: func() any { return new([]byte) }}

// Digest is the content hash of c: campaigns with equal digests compile
// alike.
func (c *Campaign) Digest() Digest {
	bp := canonPool.Get().(*[]byte)
	b := appendCampaign((*bp)[:0], c)
	d := sum(b)
	*bp = b
	canonPool.Put(bp)
	return d
}

// Digest is the content hash of cr.
func (cr *Creative) Digest() Digest {
	bp := canonPool.Get().(*[]byte)
	b := appendCreative((*bp)[:0], cr)
	d := sum(b)
	*bp = b
	canonPool.Put(bp)
	return d
}

// Digest is the content hash of the content rules.
func (cr *ContentRules) Digest() Digest {
	b := appendStrings(nil, cr.BlockedCat)
	b = appendStrings(b, cr.BlockedAdomain)
	b = binary.AppendUvarint(b, uint64(len(cr.ChannelMap)))
	for _, m := range cr.ChannelMap {
		b = appendString(b, m.Channel)
		b = appendStrings(b, m.Domains)
		b = appendStrings(b, m.Bundles)
	}
	return sum(b)
}

// Digests returns the digest of every campaign, in order, and of the
// content rules. Large sets are hashed on every CPU.
func (rs *RuleSet) Digests() (campaigns []Digest, content Digest) {
	campaigns = make([]Digest, len(rs.Campaigns))
	const chunk = 2048
	workers := min(runtime.GOMAXPROCS(0), (len(rs.Campaigns)+chunk-1)/chunk)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			var b []byte
			for i := w; i < len(rs.Campaigns); i += workers {
				b = appendCampaign(b[:0], &rs.Campaigns[i])
				campaigns[i] = sum(b)
			}
		})
	}
	wg.Wait()
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

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendStrings(b []byte, ss []string) []byte {
	b = binary.AppendUvarint(b, uint64(len(ss)))
	for _, s := range ss {
		b = appendString(b, s)
	}
	return b
}

func appendFloat(b []byte, f float64) []byte {
	return binary.LittleEndian.AppendUint64(b, math.Float64bits(f))
}

func appendInt(b []byte, v int32) []byte { return binary.AppendVarint(b, int64(v)) }

func appendClauses(b []byte, cs []Clause) []byte {
	b = binary.AppendUvarint(b, uint64(len(cs)))
	for _, c := range cs {
		b = appendString(b, c.Facet)
		b = appendStrings(b, c.Any)
	}
	return b
}

// appendCampaign appends the canonical encoding of every field of c. A
// field added to Campaign must be added here: TestDigestCoversEveryField
// fails until it is.
func appendCampaign(b []byte, c *Campaign) []byte {
	b = appendString(b, c.ID)
	b = appendString(b, c.Advertiser)
	b = appendStrings(b, c.Adomain)
	b = appendString(b, c.Status)
	b = appendString(b, c.Start)
	b = appendString(b, c.End)
	if c.Priority == nil {
		b = append(b, 0)
	} else {
		b = appendInt(append(b, 1), *c.Priority)
	}
	b = appendFloat(b, c.BidCPM)
	b = appendString(b, c.Currency)
	b = appendFloat(b, c.Budget.Daily)
	b = appendFloat(b, c.Budget.Total)
	b = appendString(b, c.Pacing)
	b = appendInt(b, c.FrequencyCap.Max)
	b = appendString(b, c.FrequencyCap.Window)
	b = appendStrings(b, c.Cat)
	b = appendClauses(b, c.Targeting.All)
	b = appendClauses(b, c.Targeting.None)
	b = appendStrings(b, c.Targeting.Channels)
	b = binary.AppendUvarint(b, uint64(len(c.Creatives)))
	for i := range c.Creatives {
		b = appendCreative(b, &c.Creatives[i])
	}
	return b
}

func appendCreative(b []byte, cr *Creative) []byte {
	b = appendString(b, cr.ID)
	b = appendInt(b, cr.W)
	b = appendInt(b, cr.H)
	b = appendStrings(b, cr.Channels)
	b = appendStrings(b, cr.Cat)
	b = appendClauses(b, cr.Persona)
	return appendString(b, cr.Adm)
}
