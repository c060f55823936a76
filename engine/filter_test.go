package engine

import (
	"math/rand/v2"
	"strings"
	"testing"
)

// linearBlockedCat and linearBlockedDomain are the definitions
// blockedCat and blockedDomain must keep: the first name some entry
// blocks, by categoryBlocks and domainBlocks, the definitions of
// blocking as they were before rules.CategoryBlocker and
// rules.DomainBlocker tested lengths first.
func linearBlockedCat(block, cats []string) (string, bool) {
	for _, c := range cats {
		for _, b := range block {
			if categoryBlocks(b, c) {
				return c, true
			}
		}
	}
	return "", false
}

func linearBlockedDomain(block, adomain []string) (string, bool) {
	for _, d := range adomain {
		for _, b := range block {
			if domainBlocks(b, d) {
				return d, true
			}
		}
	}
	return "", false
}

// categoryBlocks: c is b or starts with b and a '-', in any case.
func categoryBlocks(b, c string) bool {
	if len(c) < len(b) || !strings.EqualFold(c[:len(b)], b) {
		return false
	}
	return len(c) == len(b) || c[len(b)] == '-'
}

// domainBlocks: d is b or ends with a '.' and b, in any case.
func domainBlocks(b, d string) bool {
	if len(d) < len(b) || !strings.EqualFold(d[len(d)-len(b):], b) {
		return false
	}
	return len(d) == len(b) || d[len(d)-len(b)-1] == '.'
}

// blockPieces are what the generated names are made of: separators,
// letters in both cases, letters whose case folding leaves ASCII (the
// Kelvin sign folds to k, the long s to s), and bytes that are not UTF-8.
var blockPieces = []string{
	"IAB", "iab", "1", "10", "19", "3", "-", "-", ".", ".", "www.", "WWW.",
	"ample", "ex", "EX", "com", "Com", "k", "K", "\u212a", "s", "S", "\u017f",
	"é", "É", "\xff", "\xfe",
}

func randomName(rng *rand.Rand) string {
	var sb strings.Builder
	for n := rng.IntN(6); n >= 0; n-- {
		sb.WriteString(blockPieces[rng.IntN(len(blockPieces))])
	}
	return sb.String()
}

// relatedName derives from name an entry that may block it or just miss:
// a prefix or suffix of it (cut anywhere: "IAB1" of "IAB10", "ample.com"
// of "example.com"), in another case, or with a piece added.
func relatedName(rng *rand.Rand, name string) string {
	switch rng.IntN(6) {
	case 0:
		return name[:rng.IntN(len(name)+1)]
	case 1:
		return name[rng.IntN(len(name)+1):]
	case 2:
		return strings.ToUpper(name)
	case 3:
		return strings.ToLower(name)
	case 4:
		return name + blockPieces[rng.IntN(len(blockPieces))]
	}
	return blockPieces[rng.IntN(len(blockPieces))] + name
}

// TestBlockedMatchesDefinition compares blockedCat and blockedDomain with
// the linear definitions over generated names and block lists.
func TestBlockedMatchesDefinition(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	var hits [2]int
	for range 200_000 {
		names := make([]string, 1+rng.IntN(3))
		for i := range names {
			names[i] = randomName(rng)
		}
		block := make([]string, rng.IntN(6))
		for i := range block {
			if rng.IntN(3) == 0 {
				block[i] = randomName(rng)
			} else {
				block[i] = relatedName(rng, names[rng.IntN(len(names))])
			}
		}
		gotC, okC := blockedCat(block, names)
		wantC, wantOKC := linearBlockedCat(block, names)
		if gotC != wantC || okC != wantOKC {
			t.Fatalf("blockedCat(%q, %q) = %q, %v; want %q, %v", block, names, gotC, okC, wantC, wantOKC)
		}
		gotD, okD := blockedDomain(block, names)
		wantD, wantOKD := linearBlockedDomain(block, names)
		if gotD != wantD || okD != wantOKD {
			t.Fatalf("blockedDomain(%q, %q) = %q, %v; want %q, %v", block, names, gotD, okD, wantD, wantOKD)
		}
		if okC {
			hits[0]++
		}
		if okD {
			hits[1]++
		}
	}
	// The generator must reach both answers often, or the comparison
	// proves little.
	if hits[0] < 20_000 || hits[1] < 20_000 {
		t.Fatalf("only %d category and %d domain blocks in 200,000 cases", hits[0], hits[1])
	}
}

// TestBlockedEdges pins the cases where a prefix or suffix is not a parent.
func TestBlockedEdges(t *testing.T) {
	for _, tc := range []struct {
		block []string
		name  string
		cat   bool // blocked as a category
		dom   bool // blocked as a domain
	}{
		{[]string{"IAB1"}, "IAB10", false, false},
		{[]string{"IAB1"}, "IAB1-2", true, false},
		{[]string{"iab19"}, "IAB19-3", true, false},
		{[]string{"IAB19-3"}, "IAB19", false, false},
		{[]string{"IAB19-"}, "IAB19-3", false, false},
		{[]string{"ample.com"}, "example.com", false, false},
		{[]string{"example.com"}, "ads.EXAMPLE.com", false, true},
		{[]string{"EXAMPLE.COM"}, "example.com", true, true},
		{[]string{"example.com"}, "example.com.", false, false},
		{[]string{"www.example.com"}, "example.com", false, false},
		{[]string{"com"}, "example.com", false, true},
		{[]string{"\u212a.com"}, "k.com", false, false},            // EqualFold, but 5 bytes against 3
		{[]string{"x.\u212ass"}, "a.x.k\u017f\u017f", false, true}, // 7 bytes each
		{[]string{"", "IAB2"}, "IAB2-1", true, false},
	} {
		_, cat := blockedCat(tc.block, []string{tc.name})
		_, dom := blockedDomain(tc.block, []string{tc.name})
		if cat != tc.cat || dom != tc.dom {
			t.Errorf("%q blocks %q: category %v, domain %v; want %v, %v", tc.block, tc.name, cat, dom, tc.cat, tc.dom)
		}
		_, lcat := linearBlockedCat(tc.block, []string{tc.name})
		_, ldom := linearBlockedDomain(tc.block, []string{tc.name})
		if lcat != tc.cat || ldom != tc.dom {
			t.Errorf("definition: %q blocks %q: category %v, domain %v; want %v, %v", tc.block, tc.name, lcat, ldom, tc.cat, tc.dom)
		}
	}
}
