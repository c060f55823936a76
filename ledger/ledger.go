package ledger

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/personad/personad/rules"
)

// Errors returned by the ledger. Reserve's errors are preallocated, so a
// refused reservation does not allocate.
var (
	ErrBudget       = errors.New("ledger: budget exhausted")
	ErrNoLease      = errors.New("ledger: no budget lease held")
	ErrFrequency    = errors.New("ledger: frequency cap reached")
	ErrFrequencyMem = errors.New("ledger: frequency table full")
	ErrNoUser       = errors.New("ledger: frequency-capped campaign needs a user")
	ErrDuplicateBid = errors.New("ledger: bid id already reserved")
	ErrStaleClock   = errors.New("ledger: time is before the campaign's current day")
	ErrUnknownBid   = errors.New("ledger: unknown bid")
	ErrPrice        = errors.New("ledger: bad clearing price")
	ErrConflict     = errors.New("ledger: notice conflicts with an earlier one")
	ErrForged       = errors.New("ledger: bad notice token")
	ErrClosed       = errors.New("ledger: closed")
	ErrCorrupt      = errors.New("ledger: corrupt log")
	// ErrNotDurable wraps a failure to write or fsync the durable log
	// (its file and the system's error, such as "no space left on
	// device"): the change that waited for its record may be applied in
	// memory but is not acknowledged. A failed write is retried with the
	// next batch (a notice sent again is then acknowledged once its
	// record is durable); a failed fsync is not (the kernel may have
	// dropped the pages it could not write), and the log stays failed
	// until a restart. See Ledger.LogErr.
	ErrNotDurable = errors.New("ledger: log not durable")
)

// Pacing is how a campaign spreads its daily budget over the day.
type Pacing uint8

const (
	// PacingEven throttles bids probabilistically so that spend follows the
	// day's traffic curve (see the package documentation).
	PacingEven Pacing = iota
	// PacingASAP spends as fast as the traffic allows.
	PacingASAP
)

// Limits are a campaign's money and frequency settings, the part of its
// rules the ledger enforces. Amounts are integer micro-units of the
// campaign's currency; 0 means no limit.
type Limits struct {
	DailyMicros int64
	TotalMicros int64
	Pacing      Pacing
	// CapMax impressions per user within CapWindow; 0 means no cap.
	CapMax    int32
	CapWindow time.Duration
	// Currency is the campaign's currency (ISO 4217), which its budgets
	// and spend count in. The ledger records it durably (Currencies), so
	// that a change can be checked against the spend counted in the old
	// one, even across restarts; "" records nothing.
	Currency string
}

// maxCurrency bounds Limits.Currency (rules allow three letters).
const maxCurrency = 16

// MaxMicros is the largest budget the ledger accepts (about 281 million
// currency units): daily counters pack a day number beside the amount.
const MaxMicros = 1<<usedBits - 1

// LimitsFromRules converts a validated rules campaign into Limits.
func LimitsFromRules(c *rules.Campaign) (Limits, error) {
	l := Limits{
		DailyMicros: rules.Micros(c.Budget.Daily),
		TotalMicros: rules.Micros(c.Budget.Total),
		CapMax:      c.FrequencyCap.Max,
		Currency:    c.EffectiveCurrency(),
	}
	if c.Pacing == rules.PacingASAP {
		l.Pacing = PacingASAP
	}
	if c.FrequencyCap.Window != "" {
		d, err := time.ParseDuration(c.FrequencyCap.Window)
		if err != nil {
			return Limits{}, fmt.Errorf("ledger: campaign %q: frequency_cap.window: %w", c.ID, err)
		}
		l.CapWindow = d
	}
	return l, l.validate()
}

func (l Limits) validate() error {
	switch {
	case l.DailyMicros < 0 || l.TotalMicros < 0:
		return errors.New("ledger: negative budget")
	case l.DailyMicros > MaxMicros || l.TotalMicros > math.MaxInt64/2:
		return fmt.Errorf("ledger: budget above %d micros", int64(MaxMicros))
	case l.CapMax < 0:
		return errors.New("ledger: negative frequency cap")
	case l.CapMax > 0 && l.CapWindow <= 0:
		return errors.New("ledger: frequency cap without a window")
	case l.CapWindow > 366*24*time.Hour:
		return errors.New("ledger: frequency window above a year")
	case l.Pacing > PacingASAP:
		return errors.New("ledger: unknown pacing")
	case len(l.Currency) > maxCurrency:
		return fmt.Errorf("ledger: currency above %d bytes", maxCurrency)
	}
	return nil
}

// Config configures a Ledger. Start from DefaultConfig.
type Config struct {
	// Dir holds the durable log and checkpoints (the caller passes
	// <data-dir>/ledger). Empty keeps everything in memory: nothing
	// survives a restart (tests and the pacing simulator).
	Dir string
	// Location is where a "day" of a daily budget begins and ends.
	// Nil means UTC.
	Location *time.Location
	// ReservationTTL is how long a reservation waits for a notice before it
	// expires and releases its spend; ChannelTTL overrides it per channel
	// (see TTL).
	ReservationTTL time.Duration
	ChannelTTL     map[string]time.Duration
	// Retention is how long a finished bid is remembered after its
	// reservation's deadline so replayed notices are recognised.
	Retention time.Duration

	// ControlInterval is the pacing controller's period. ExpiryInterval
	// is how often expired reservations are released.
	ControlInterval time.Duration
	ExpiryInterval  time.Duration
	// MinRate is the lowest pass-through rate of an even campaign.
	MinRate float64
	// ProfileSmoothing is the weight of the newest day in the learned
	// hour-of-day traffic profile (exponential smoothing).
	ProfileSmoothing float64
	// Manual stops the Ledger from starting its maintenance goroutine: the
	// caller drives time with Tick (simulators, tests). The log writer and
	// lease goroutines run regardless.
	Manual bool
	// Clock tells the maintenance and lease goroutines the time; nil means
	// time.Now. It must agree with the now values callers pass to Allow and
	// Reserve: leases are taken for the clock's day.
	Clock func() time.Time

	// SyncInterval is the batching window of the log: records are written
	// to the file (where they survive the process's crash) together, at
	// most this long after they are added.
	SyncInterval time.Duration
	// MaxSyncDelay bounds how long a written record waits for its fsync
	// (what survives a power loss or an OS crash) when nobody waits for
	// it: reservations, expiries, pacing rates. A record something waits
	// for (a notice, a lease, Flush) is fsynced in the batch that writes
	// it. A power loss or OS crash can lose the frequency counts of this
	// long a window of reservations (see the package documentation). The
	// default, 100 ms, leaves at most 10 fsyncs a second to this timer,
	// against one per batch (~420/s at 2,000 bids/s) when every batch was
	// fsynced, and puts a tenth of a second of frequency counts at risk in
	// a power loss: at 2,000 bids/s, some 200 impressions no longer
	// counted against their users' caps.
	MaxSyncDelay time.Duration
	// CompactBytes triggers a checkpoint when the live log grows past it.
	CompactBytes int64

	// LeaseFraction is the part of a budget leased at a time (from the
	// durable log, or from Redis); the lease is what a crash may count as
	// spent without a record. LeaseMinMicros is the smallest lease.
	LeaseFraction  float64
	LeaseMinMicros int64
	// LeaseTimeout bounds one lease call to the backend.
	LeaseTimeout time.Duration
	// LeaseRetry is how long bids wait before asking the Leaser again for
	// a campaign it granted nothing (the shared budget is spent, or other
	// nodes hold it): each ask costs the lease goroutine a round trip,
	// which campaigns with budget left wait behind. A change of the
	// campaign's limits asks at once.
	LeaseRetry time.Duration
	// Leaser, when set, is where budget leases come from (Redis, for many
	// nodes); nil means this node's own budget arithmetic.
	Leaser Leaser
	// Frequency, when set, shares frequency counts between nodes.
	Frequency FrequencyShare

	// FrequencyShards is the number of lock stripes of the frequency table
	// and the reservation table (a power of two).
	FrequencyShards int
	// MaxFrequencyEntries bounds the frequency table; when it is full, new
	// (user, campaign) pairs of capped campaigns are refused.
	MaxFrequencyEntries int
	// NoticeKey signs notice tokens (at least 16 bytes); nil means a random
	// key, which does not survive a restart.
	NoticeKey []byte
	// LogTrouble, when set, is called from the log's writer goroutine
	// when writing the durable log begins to fail (err wraps
	// ErrNotDurable and names the file and the system's error) and
	// again, with nil, when a later write succeeds: once per change, not
	// per attempt. It must not block or call the Ledger.
	LogTrouble func(err error)
}

// DefaultConfig returns the defaults: UTC days, 5-minute reservations
// remembered 10 minutes more, a 1-minute pacing controller, log writes
// batched over 2 ms and fsynced within 100 ms (at once for what someone
// waits on), leases of 0.5% of a budget.
func DefaultConfig() Config {
	return Config{
		ReservationTTL:      5 * time.Minute,
		Retention:           10 * time.Minute,
		ControlInterval:     time.Minute,
		ExpiryInterval:      time.Second,
		MinRate:             0.0001,
		ProfileSmoothing:    0.3,
		SyncInterval:        2 * time.Millisecond,
		MaxSyncDelay:        100 * time.Millisecond,
		CompactBytes:        64 << 20,
		LeaseFraction:       0.005,
		LeaseMinMicros:      1_000_000,
		LeaseTimeout:        2 * time.Second,
		LeaseRetry:          time.Second,
		FrequencyShards:     256,
		MaxFrequencyEntries: 8 << 20,
	}
}

func (c *Config) validate() error {
	switch {
	case c.ReservationTTL <= 0:
		return errors.New("ledger: ReservationTTL must be > 0")
	case c.Retention < 0:
		return errors.New("ledger: Retention must be >= 0")
	case c.ControlInterval <= 0 || c.ExpiryInterval <= 0:
		return errors.New("ledger: ControlInterval and ExpiryInterval must be > 0")
	case !(c.MinRate > 0 && c.MinRate <= 1):
		return errors.New("ledger: MinRate must be in (0, 1]")
	case !(c.ProfileSmoothing > 0 && c.ProfileSmoothing <= 1):
		return errors.New("ledger: ProfileSmoothing must be in (0, 1]")
	case c.SyncInterval <= 0:
		return errors.New("ledger: SyncInterval must be > 0")
	case c.MaxSyncDelay <= 0:
		return errors.New("ledger: MaxSyncDelay must be > 0")
	case !(c.LeaseFraction > 0 && c.LeaseFraction <= 1) || c.LeaseMinMicros <= 0:
		return errors.New("ledger: LeaseFraction must be in (0, 1] and LeaseMinMicros > 0")
	case c.LeaseTimeout <= 0:
		return errors.New("ledger: LeaseTimeout must be > 0")
	case c.LeaseRetry < 0:
		return errors.New("ledger: LeaseRetry must be >= 0")
	case c.FrequencyShards <= 0 || c.FrequencyShards&(c.FrequencyShards-1) != 0:
		return errors.New("ledger: FrequencyShards must be a power of two")
	case c.MaxFrequencyEntries <= 0:
		return errors.New("ledger: MaxFrequencyEntries must be > 0")
	case c.NoticeKey != nil && len(c.NoticeKey) < 16:
		return errors.New("ledger: NoticeKey must be at least 16 bytes")
	}
	for ch, d := range c.ChannelTTL {
		if d <= 0 {
			return fmt.Errorf("ledger: ChannelTTL[%q] must be > 0", ch)
		}
	}
	return nil
}

// Ledger holds the live money and frequency state of every campaign:
// spend, reservations, pacing rates and frequency counts. It lives outside
// the rules snapshot: a rules reload rebinds to the same *Campaign by id.
// A Ledger is safe for concurrent use.
type Ledger struct {
	cfg   Config
	loc   *time.Location
	clock func() time.Time
	days  dayCache

	mu        sync.Mutex // guards byID and list growth
	byID      map[string]*Campaign
	campaigns atomic.Pointer[[]*Campaign] // by key; append-only, copy on write

	// warmer is cfg.Frequency when it implements FrequencyWarmer.
	warmer FrequencyWarmer

	freq   freqTable
	resv   resvTable
	signer *Signer
	bidSeq atomic.Uint64
	bidKey uint64

	log    *journal // nil in memory
	leases leaseState
	pace   paceState
	stats  counters

	tickMu   sync.Mutex
	lastSeen int64 // latest record time seen by replay

	closed   atomic.Bool
	stop     chan struct{}
	wg       sync.WaitGroup
	closeMu  sync.Mutex
	closeErr error
}

// New opens a ledger, replaying its durable log when cfg.Dir is set. A
// restart never resets spend: whatever the log cannot prove unspent is
// counted as spent (see the package documentation).
func New(cfg Config) (*Ledger, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	l := &Ledger{
		cfg:   cfg,
		loc:   cfg.Location,
		clock: cfg.Clock,
		byID:  map[string]*Campaign{},
		stop:  make(chan struct{}),
	}
	l.cfg.ChannelTTL = make(map[string]time.Duration, len(cfg.ChannelTTL))
	for k, v := range cfg.ChannelTTL {
		l.cfg.ChannelTTL[k] = v
	}
	if l.loc == nil {
		l.loc = time.UTC
	}
	if l.clock == nil {
		l.clock = time.Now
	}
	l.days.loc = l.loc
	empty := []*Campaign{}
	l.campaigns.Store(&empty)
	l.warmer, _ = cfg.Frequency.(FrequencyWarmer)
	l.freq.init(cfg.FrequencyShards, cfg.MaxFrequencyEntries)
	l.resv.init(cfg.FrequencyShards)
	var err error
	if l.signer, err = NewSigner(cfg.NoticeKey); err != nil {
		return nil, err
	}
	l.bidKey = rand.Uint64()
	l.pace.init(l)
	if cfg.Dir != "" {
		if l.log, err = openJournal(l, cfg.Dir); err != nil {
			return nil, err
		}
	}
	l.leases.init(l)
	if !cfg.Manual {
		l.wg.Add(1)
		go l.maintain()
	}
	return l, nil
}

// Close stops the ledger's goroutines and waits for them, returns unspent
// leases, and flushes the log. The ledger must not be used afterwards.
func (l *Ledger) Close() error {
	l.closeMu.Lock()
	defer l.closeMu.Unlock()
	if l.closed.Swap(true) {
		return l.closeErr
	}
	close(l.stop)
	l.wg.Wait()
	err := l.leases.close()
	if l.log != nil {
		err = errors.Join(err, l.log.close())
	}
	if l.cfg.Frequency != nil {
		err = errors.Join(err, l.cfg.Frequency.Close())
	}
	l.closeErr = err
	return err
}

// Campaign returns the live state of campaign id, creating it at first
// use, and (re)applies lim. The same id always yields the same *Campaign,
// so a rules reload that calls Campaign again carries spend, pacing and
// frequency counts across; the new limits apply atomically. A change of
// its recorded currency (Limits.Currency) is refused with a
// *CurrencyError, changing nothing, while the campaign holds money in the
// old one (see SetCurrencies). Campaign
// allocates only when it creates or changes a campaign; call it when
// compiling rules, not per decision.
func (l *Ledger) Campaign(id string, lim Limits) (*Campaign, error) {
	if err := lim.validate(); err != nil {
		return nil, fmt.Errorf("ledger: campaign %q: %w", id, err)
	}
	if id == "" {
		return nil, errors.New("ledger: empty campaign id")
	}
	l.mu.Lock()
	c := l.byID[id]
	created := c == nil
	if created {
		c = l.addCampaignLocked(id)
	}
	record := created
	switch was := c.Currency(); {
	case lim.Currency == "" || lim.Currency == was:
	case was == "":
		cur := strings.Clone(lim.Currency)
		c.currency.Store(&cur)
		record = true
	default:
		// A change: refused, changing nothing, while the campaign holds
		// money in its currency (see SetCurrencies); logged if not.
		if _, err := l.switchCurrenciesLocked([]*Campaign{c}, []string{lim.Currency}); err != nil {
			l.mu.Unlock()
			return nil, err
		}
	}
	if l.log != nil && record {
		// Under l.mu, so that keys reach the log in the order they were
		// given: replay takes a key out of order for corruption. Lock
		// order: l.mu, then the reservation shards', then the journal's.
		l.log.appendCampaign(c.key, id, c.Currency())
	}
	l.mu.Unlock()
	if old := c.limits.Load(); old == nil || *old != lim {
		c.limits.Store(&lim)
		c.leaseIdle.Store(0) // a raised budget may have room: ask at once
		if old != nil && (lowers(old.DailyMicros, lim.DailyMicros) || lowers(old.TotalMicros, lim.TotalMicros)) {
			c.shrink.Store(true)
		}
		// A grant in flight may have read the old limits (and, granted
		// nothing, tell bids to wait LeaseRetry): have it run again.
		l.leases.requestAgain(c)
	}
	return c, nil
}

// lowers reports whether a budget (0: unlimited) going from old to now
// is lowered.
func lowers(old, now int64) bool { return now > 0 && (old == 0 || now < old) }

// Currencies returns the currency last recorded for each campaign that
// has one (Limits.Currency), by id: in this process, or before it, in the
// log.
func (l *Ledger) Currencies() map[string]string {
	camps := *l.campaigns.Load()
	out := make(map[string]string, len(camps))
	for _, c := range camps {
		if cur := c.Currency(); cur != "" {
			out[c.id] = cur
		}
	}
	return out
}

// addCampaignLocked registers a new campaign under l.mu. The ledger
// keeps its campaigns for the process's life, so it keeps its own copy
// of id: a rule set's strings point into the text they were parsed from
// (rules.Parser's batches of ~32 campaigns), which one kept id would
// keep alive long after that set was replaced.
func (l *Ledger) addCampaignLocked(id string) *Campaign {
	id = strings.Clone(id)
	old := *l.campaigns.Load()
	c := newCampaign(l, uint32(len(old)), id)
	list := make([]*Campaign, len(old)+1)
	copy(list, old)
	list[len(old)] = c
	l.campaigns.Store(&list)
	l.byID[id] = c
	return c
}

// campaignByKey returns the campaign with key k, or nil.
func (l *Ledger) campaignByKey(k uint32) *Campaign {
	list := *l.campaigns.Load()
	if int(k) < len(list) {
		return list[k]
	}
	return nil
}

// Lookup returns campaign id's live state, or nil when the ledger has
// never seen it.
func (l *Ledger) Lookup(id string) *Campaign {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.byID[id]
}

// TTL is the reservation lifetime for a channel: Config.ChannelTTL's entry
// or the default.
func (l *Ledger) TTL(channel string) time.Duration {
	if d, ok := l.cfg.ChannelTTL[channel]; ok {
		return d
	}
	return l.cfg.ReservationTTL
}

// NewBidID returns a bid id unique to this ledger for the life of the
// process and, with overwhelming probability, across restarts and nodes
// (a random 64-bit permutation of a counter). It does not allocate.
func (l *Ledger) NewBidID() uint64 {
	for {
		if id := splitmix64(l.bidKey + l.bidSeq.Add(1)); id != 0 {
			return id
		}
	}
}

func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// maintain is the maintenance goroutine: expiry every ExpiryInterval and
// the pacing controller every ControlInterval, both on Clock's time.
func (l *Ledger) maintain() {
	defer l.wg.Done()
	t := time.NewTicker(l.cfg.ExpiryInterval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			l.Tick(l.clock())
		}
	}
}

// Tick runs the periodic work due at now: it expires overdue reservations,
// forgets finished bids past retention, sweeps expired frequency entries
// and, once per ControlInterval, steps the pacing controller. The
// maintenance goroutine calls it; with Config.Manual the caller does,
// which lets a simulator run a day in seconds.
func (l *Ledger) Tick(now time.Time) {
	n := now.UnixNano()
	l.tickMu.Lock()
	defer l.tickMu.Unlock()
	l.expire(n)
	l.freq.sweep(n)
	l.pace.maybeStep(n)
}

// Flush waits until every record added so far is durable. It returns at
// once for an in-memory ledger.
func (l *Ledger) Flush(ctx context.Context) error {
	if l.log == nil {
		return nil
	}
	return l.log.wait(ctx, l.log.appendedSeq())
}
