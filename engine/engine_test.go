package engine

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/personad/personad/segments"
)

func TestDeadline(t *testing.T) {
	r, snap := allocWorld(t)
	e := newTestEngine(t, r, snap, 0)
	q := &Query{Now: time.Now(), BuyerUID: "u1", Channel: "social", Imps: []Imp{{ID: "1", Sizes: []Size{{300, 250}}}}}
	var d Decision
	e.Decide(context.Background(), q, &d)
	if len(d.Bids) != 1 {
		t.Fatalf("no deadline: %d bids, reason %v", len(d.Bids), d.NoBid)
	}
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Millisecond))
	defer cancel()
	e.Decide(ctx, q, &d)
	if len(d.Bids) != 0 || d.NoBid != ReasonDeadline {
		t.Errorf("past deadline: %d bids, reason %v; want no bid, deadline", len(d.Bids), d.NoBid)
	}
	// The Query's own deadline counts the same way, and the earlier of
	// the two wins.
	q.Deadline = time.Now().Add(-time.Millisecond)
	e.Decide(context.Background(), q, &d)
	if len(d.Bids) != 0 || d.NoBid != ReasonDeadline {
		t.Errorf("past Query.Deadline: %d bids, reason %v; want no bid, deadline", len(d.Bids), d.NoBid)
	}
	late, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(time.Hour))
	defer cancel2()
	e.Decide(late, q, &d)
	if len(d.Bids) != 0 || d.NoBid != ReasonDeadline {
		t.Errorf("past Query.Deadline, later ctx deadline: %d bids, reason %v; want no bid, deadline", len(d.Bids), d.NoBid)
	}
	q.Deadline = time.Now().Add(time.Hour)
	e.Decide(ctx, q, &d)
	if len(d.Bids) != 0 || d.NoBid != ReasonDeadline {
		t.Errorf("future Query.Deadline, past ctx deadline: %d bids, reason %v; want no bid, deadline", len(d.Bids), d.NoBid)
	}
	e.Decide(context.Background(), q, &d)
	if len(d.Bids) != 1 {
		t.Errorf("future Query.Deadline: %d bids, reason %v; want a bid", len(d.Bids), d.NoBid)
	}
}

func TestNoRules(t *testing.T) {
	e, err := New(DefaultConfig(), segments.NewStore(segments.NewBuilder().Build(1)))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	var d Decision
	e.Decide(context.Background(), &Query{Imps: []Imp{{ID: "1", Sizes: []Size{{1, 1}}}}}, &d)
	if d.NoBid != ReasonNoRules {
		t.Errorf("reason %v, want no_rules", d.NoBid)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	cfg := DefaultConfig()
	cfg.PersonaCacheSize = -1
	if _, err := New(cfg, segments.NewStore(nil)); err == nil {
		t.Error("negative cache size accepted")
	}
	if _, err := New(DefaultConfig(), nil); err == nil {
		t.Error("nil segments accepted")
	}
	// Beyond the limit: a size whose counters overflow, which the cache
	// itself reported only as "NumCounters can't be negative".
	cfg.PersonaCacheSize = math.MaxInt64/10 + 1
	if _, err := New(cfg, segments.NewStore(nil)); err == nil || !strings.Contains(err.Error(), "PersonaCacheSize 922337203685477581 exceeds the limit of 4294967294") {
		t.Errorf("cache size %d: err %v, want the limit named", cfg.PersonaCacheSize, err)
	}
}

// TestSwapUnderLoad swaps rules and segment snapshots while decisions run
// (run it with -race): every decision must be made by exactly one complete
// rules version and one segment version, and see the persona of the
// segment version it names — never a stale cached one.
func TestSwapUnderLoad(t *testing.T) {
	rsA := mustParse(t, `
campaigns:
  - id: a
    bid_cpm: 1
    targeting: {all: [{facet: title, any: [cmo]}]}
    creatives: [{id: a1, w: 300, h: 250, adm: "<b>a</b>"}]
`)
	rsB := mustParse(t, `
campaigns:
  - id: b
    bid_cpm: 1
    targeting: {all: [{facet: title, any: [cmo]}]}
    creatives: [{id: b1, w: 300, h: 250, adm: "<b>b</b>"}]
`)
	ra, err := Compile(rsA, "A")
	if err != nil {
		t.Fatal(err)
	}
	rb, err := Compile(rsB, "B")
	if err != nil {
		t.Fatal(err)
	}
	// Odd segment versions have u1 as a CMO, even ones do not.
	snapAt := func(v uint64) *segments.Snapshot {
		b := segments.NewBuilder()
		if v%2 == 1 {
			b.Add("title", "cmo", "u1")
		} else {
			b.Add("title", "cfo", "u1")
		}
		return b.Build(v)
	}
	store := segments.NewStore(snapAt(1))
	e, err := New(DefaultConfig(), store)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	e.SetRules(ra)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			q := &Query{Now: time.Now(), BuyerUID: "u1", Imps: []Imp{{ID: "1", Sizes: []Size{{300, 250}}}}}
			var d Decision
			for {
				select {
				case <-stop:
					return
				default:
				}
				e.Decide(context.Background(), q, &d)
				cmo := d.SegmentsVersion%2 == 1
				switch {
				case cmo && len(d.Bids) != 1:
					errs <- fmt.Errorf("segments v%d (cmo), rules %s: no bid (%v)", d.SegmentsVersion, d.RulesVersion, d.NoBid)
					return
				case !cmo && len(d.Bids) != 0:
					errs <- fmt.Errorf("segments v%d (cfo): stale persona bid %s", d.SegmentsVersion, d.Bids[0].Campaign.ID)
					return
				case len(d.Bids) == 1 && d.Bids[0].Campaign.ID != map[string]string{"A": "a", "B": "b"}[d.RulesVersion]:
					errs <- fmt.Errorf("rules %s decided with campaign %s", d.RulesVersion, d.Bids[0].Campaign.ID)
					return
				}
			}
		}()
	}
	for i := range 2000 {
		if i%2 == 0 {
			e.SetRules(rb)
		} else {
			e.SetRules(ra)
		}
		store.Publish(snapAt(uint64(i + 2)))
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestExclusiveFacets checks persona resolution once the binding knows
// which facets are exclusive: a user's single title is still found
// wherever it sorts, a non-exclusive facet still yields every value, and a
// snapshot that breaks exclusivity (a user with two titles) is resolved
// in full.
func TestExclusiveFacets(t *testing.T) {
	r, err := Compile(mustParse(t, `
campaigns:
  - id: a
    bid_cpm: 1
    targeting:
      all: [{facet: title, any: [cmo, cfo, cto]}, {facet: pain_point, any: [churn, attribution]}]
    creatives: [{id: a1, w: 1, h: 1, adm: x}]
`), "")
	if err != nil {
		t.Fatal(err)
	}
	// resolve returns the user's persona and which facets the analysed
	// binding found exclusive.
	resolve := func(snap *segments.Snapshot, user string) ([]string, map[string]bool) {
		t.Helper()
		e := newTestEngine(t, r, snap, 0)
		e.bind(r, snap)
		deadline := time.Now().Add(10 * time.Second)
		for !e.binding.Load().analyzed {
			if time.Now().After(deadline) {
				t.Fatal("binding never analysed")
			}
			time.Sleep(time.Millisecond)
		}
		b := e.binding.Load()
		exclusive := map[string]bool{}
		for _, g := range b.groups {
			exclusive[r.facets[r.terms[g.terms[0]].facet]] = g.exclusive
		}
		s := getScratch(r)
		defer putScratch(s)
		e.resolvePersona(b, &Query{BuyerUID: user}, s)
		var got []string
		for _, term := range s.terms {
			got = append(got, r.terms[term].name)
		}
		return got, exclusive
	}
	exclusive := parseSegments(t, []byte(`
title:cmo u1 u2 u3 u4
title:cfo u5 u6
title:cto u7
pain_point:churn u1 u7
pain_point:attribution u1 u5
`))
	for user, want := range map[string][]string{
		"u1": {"pain_point:attribution", "pain_point:churn", "title:cmo"},
		"u7": {"pain_point:churn", "title:cto"},
		"u6": {"title:cfo"},
		"u9": nil,
	} {
		got, excl := resolve(exclusive, user)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("exclusive snapshot, %s (-want +got):\n%s", user, diff)
		}
		if diff := cmp.Diff(map[string]bool{"title": true, "pain_point": false}, excl); diff != "" {
			t.Errorf("exclusive facets (-want +got):\n%s", diff)
		}
	}
	broken := parseSegments(t, []byte(`
title:cmo u1 u2 u3 u4
title:cfo u1 u6
title:cto u7
pain_point:churn u1
`))
	got, excl := resolve(broken, "u1")
	if diff := cmp.Diff([]string{"pain_point:churn", "title:cfo", "title:cmo"}, got); diff != "" {
		t.Errorf("two titles (-want +got):\n%s", diff)
	}
	if excl["title"] {
		t.Error("title found exclusive in a snapshot where u1 has two titles")
	}
}
