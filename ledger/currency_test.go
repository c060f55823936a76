package ledger

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"testing"
)

// TestCurrencyChangeRefusedWhileHoldingMoney: a change of a campaign's
// currency is refused, changing nothing, while the ledger holds money for
// it in the old one — spend, or a bid a late win or bill may still count
// (a loss released its spend) — and recorded once it holds none; a bid
// priced in the old currency is refused from then on.
func TestCurrencyChangeRefusedWhileHoldingMoney(t *testing.T) {
	clk := newFakeClock(t0)
	l := newLedger(t, memConfig(clk))
	lim := Limits{TotalMicros: 10 * unit, Pacing: PacingASAP, Currency: "USD"}
	a := mustCampaign(t, l, "a", lim)
	b := mustCampaign(t, l, "b", lim)
	if _, err := l.ReserveIn(a, "USD", 1, 0, 20_000, t0.UnixNano(), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := l.ReserveIn(b, "USD", 2, 0, 30_000, t0.UnixNano(), 0); err != nil {
		t.Fatal(err)
	}
	if err := l.Loss(context.Background(), 2, t0.UnixNano()); err != nil {
		t.Fatal(err)
	}
	want := []CurrencyConflict{
		{ID: "a", From: "USD", To: "EUR", SpentMicros: 20_000, Bids: 1},
		{ID: "b", From: "USD", To: "EUR", Bids: 1},
	}
	var ce *CurrencyError
	if _, err := l.SetCurrencies(map[string]string{"a": "EUR", "b": "EUR", "new": "EUR"}); !errors.As(err, &ce) || fmt.Sprint(ce.Conflicts) != fmt.Sprint(want) {
		t.Fatalf("SetCurrencies: %v; want the conflicts %v", err, want)
	}
	if got := l.CurrencyConflicts(map[string]string{"a": "EUR", "b": "EUR"}); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("CurrencyConflicts: %v, want %v", got, want)
	}
	if got, want := l.Currencies(), map[string]string{"a": "USD", "b": "USD"}; !maps.Equal(got, want) {
		t.Errorf("after the refusal: Currencies() = %v, want %v (nothing changed)", got, want)
	}
	if _, err := l.ReserveIn(b, "USD", 3, 0, 10_000, t0.UnixNano(), 0); err != nil {
		t.Errorf("a USD bid after the refusal: %v, want reserved", err)
	}
	eur := lim
	eur.Currency = "EUR"
	if _, err := l.Campaign("a", eur); !errors.As(err, &ce) || len(ce.Conflicts) != 1 || ce.Conflicts[0].ID != "a" {
		t.Errorf("Campaign(a) in EUR: %v; want a *CurrencyError for a", err)
	}
	if got := a.Currency(); got != "USD" {
		t.Errorf("a's currency after the refused Campaign: %s, want USD", got)
	}

	// Every bid of b lost, then forgotten: b holds nothing in USD.
	if err := l.Loss(context.Background(), 3, t0.UnixNano()); err != nil {
		t.Fatal(err)
	}
	late := t0.Add(l.cfg.ReservationTTL + l.cfg.Retention)
	l.Tick(late)
	l.Tick(late)
	was, err := l.SetCurrencies(map[string]string{"b": "EUR"})
	if err != nil || !maps.Equal(was, map[string]string{"b": "USD"}) {
		t.Fatalf("SetCurrencies(b: EUR) holding nothing: was %v, %v; want was USD", was, err)
	}
	if _, err := l.ReserveIn(b, "USD", 4, 0, 10_000, late.UnixNano(), 0); err != ErrCurrency {
		t.Errorf("a bid priced in USD after the change: %v, want ErrCurrency", err)
	}
	if _, err := l.ReserveIn(b, "EUR", 5, 0, 10_000, late.UnixNano(), 0); err != nil {
		t.Errorf("a bid priced in EUR after the change: %v", err)
	}
}

// TestCurrencyChangeAtomicWithReservations: bids priced in the old
// currency race a change of it; either the change is refused (a bid
// booked first) and bids go on in the old currency, or it is recorded
// and no bid in the old currency ever booked: none books between the
// check and the change.
func TestCurrencyChangeAtomicWithReservations(t *testing.T) {
	clk := newFakeClock(t0)
	l := newLedger(t, memConfig(clk))
	var bid atomic.Uint64
	var changed, refused int
	for round := range 200 {
		c := mustCampaign(t, l, fmt.Sprint("c", round), Limits{Pacing: PacingASAP, Currency: "USD"})
		var (
			booked atomic.Int64
			start  = make(chan struct{})
			stop   atomic.Bool
			wg     sync.WaitGroup
		)
		for range 3 {
			wg.Go(func() {
				<-start
				for !stop.Load() {
					if _, err := l.ReserveIn(c, "USD", bid.Add(1), 0, 1000, t0.UnixNano(), 0); err == nil {
						booked.Add(1)
					} else if err != ErrCurrency {
						t.Error(err)
						return
					}
				}
			})
		}
		close(start)
		_, err := l.SetCurrencies(map[string]string{c.ID(): "EUR"})
		stop.Store(true)
		wg.Wait()
		var ce *CurrencyError
		switch {
		case err == nil:
			changed++
			if n := booked.Load(); n != 0 || c.totalUsed.Load() != 0 {
				t.Fatalf("round %d: currency changed to EUR, but %d bids priced in USD booked %d micros", round, n, c.totalUsed.Load())
			}
		case errors.As(err, &ce):
			refused++
			if c.Currency() != "USD" || booked.Load() == 0 {
				t.Fatalf("round %d: refused (%v) with %d bids booked; currency %s, want USD", round, err, booked.Load(), c.Currency())
			}
		default:
			t.Fatal(err)
		}
	}
	t.Logf("%d changes recorded, %d refused", changed, refused)
}
