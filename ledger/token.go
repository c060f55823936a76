package ledger

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"hash"
	"sync"
	"sync/atomic"
)

// Notice tokens go into nurl, burl and lurl so that only notices for bids
// this server made are accepted. A token is base64url (no padding) of
//
//	version byte (1) | bid uint64 | bid price micros int64 | HMAC-SHA256[:16]
//
// big endian, the MAC over the first 17 bytes with the server's key. A
// 128-bit truncated HMAC-SHA256 is ample against forgery (RFC 2104 §5).
const (
	tokenVersion = 1
	tokenBody    = 17
	tokenMAC     = 16
	tokenLen     = tokenBody + tokenMAC
)

// Signer signs and verifies notice tokens. It is safe for concurrent use.
type Signer struct {
	key    []byte
	pool   sync.Pool // *macState
	forged atomic.Int64
}

// NewSigner returns a Signer with key (at least 16 bytes); nil key means a
// random one, which does not survive a restart.
func NewSigner(key []byte) (*Signer, error) {
	if key == nil {
		key = make([]byte, 32)
		rand.Read(key)
	}
	if len(key) < 16 {
		return nil, errors.New("ledger: notice key must be at least 16 bytes")
	}
	s := &Signer{key: append([]byte(nil), key...)}
	s.pool.New = func() any { return &macState{h: hmac.New(sha256.New, s.key)} }
	return s, nil
}

// macState is a pooled HMAC with its own scratch space: what an
// interface call (hash.Hash) touches escapes, so the body and the sum live
// here rather than on each caller's stack, and signing allocates nothing.
type macState struct {
	h    hash.Hash
	body [tokenBody]byte
	sum  [sha256.Size]byte
}

// mac returns the HMAC of body (tokenBody bytes).
func (s *Signer) mac(body []byte) (sum [sha256.Size]byte) {
	st := s.pool.Get().(*macState)
	n := copy(st.body[:], body)
	st.h.Reset()
	st.h.Write(st.body[:n])
	copy(sum[:], st.h.Sum(st.sum[:0]))
	s.pool.Put(st)
	return sum
}

// Sign returns the token for bid at priceMicros.
func (s *Signer) Sign(bid uint64, priceMicros int64) string {
	return string(s.AppendSign(nil, bid, priceMicros))
}

// AppendSign appends the token Sign returns to dst, so that a caller
// building URLs around it allocates once.
func (s *Signer) AppendSign(dst []byte, bid uint64, priceMicros int64) []byte {
	var b [tokenLen]byte
	b[0] = tokenVersion
	be.PutUint64(b[1:], bid)
	be.PutUint64(b[9:], uint64(priceMicros))
	sum := s.mac(b[:tokenBody])
	copy(b[tokenBody:], sum[:tokenMAC])
	return base64.RawURLEncoding.AppendEncode(dst, b[:])
}

// Verify checks token and returns the bid and price it was signed for. A
// malformed or forged token returns ErrForged and is counted.
func (s *Signer) Verify(token string) (bid uint64, priceMicros int64, err error) {
	var b [tokenLen + 3]byte
	if base64.RawURLEncoding.DecodedLen(len(token)) != tokenLen {
		s.forged.Add(1)
		return 0, 0, ErrForged
	}
	n, err := base64.RawURLEncoding.Decode(b[:], []byte(token))
	if err != nil || n != tokenLen || b[0] != tokenVersion {
		s.forged.Add(1)
		return 0, 0, ErrForged
	}
	if sum := s.mac(b[:tokenBody]); !hmac.Equal(sum[:tokenMAC], b[tokenBody:tokenLen]) {
		s.forged.Add(1)
		return 0, 0, ErrForged
	}
	return be.Uint64(b[1:]), int64(be.Uint64(b[9:])), nil
}

// Forged returns how many tokens failed verification.
func (s *Signer) Forged() int64 { return s.forged.Load() }

// Signer returns the ledger's notice signer (Config.NoticeKey).
func (l *Ledger) Signer() *Signer { return l.signer }
