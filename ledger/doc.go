// Package ledger holds personad's exact money and frequency state: spend
// against daily and total budgets, reservations awaiting win, billing and
// loss notices, even-pacing rates and per-user frequency counts. It lives
// outside the rules snapshot: the engine binds each compiled campaign to
// the *Campaign that Ledger.Campaign returns for its id, and a reload binds
// the same object again, so live state is never reset by a reload.
//
// # Hot path
//
// Campaign.Allow (budget and pacing) is lock-free: atomic loads and one
// atomic add, no allocation. Ledger.FrequencyOK takes one short striped
// mutex and does not allocate (with a FrequencyShare, it then asks the
// share, which answers from its cache, with no I/O: below). Ledger.Reserve reserves with
// compare-and-swap loops on the campaign's counters, so that reserved plus
// settled spend never passes a budget whatever the concurrency (only late
// notices, below, add spend past it), counts the impression under the
// frequency stripe's lock, and records the reservation; it allocates only
// when a table grows.
//
// Daily counters pack a 16-bit day number (days since 1970-01-01 in
// Config.Location) above a 48-bit amount, so one CAS both rolls the day
// over and reserves. A budget day is a calendar day in that zone, DST
// included.
//
// # Notices
//
// Win, Bill and Loss are idempotent per bid, and the money a bid finally
// counts depends only on which notices arrived, never their order or
// repetition: the billed price if a bill arrived (even after a loss or
// expiry: money the exchange charged is never dropped; such bills are
// counted as late); otherwise nothing if a loss arrived; otherwise, once
// the reservation expires (TTL per channel), its bid price if a win
// arrived — before or after the expiry: a late win counts too — and
// nothing if not. A bill above the bid, a negative price or an
// unknown bid is an error and changes nothing. Signer makes and checks the
// HMAC-SHA256 tokens that go into nurl, burl and lurl.
//
// Late notices are the overspend bound: a reservation that expires
// unanswered releases its price for later bids, and a win or bill that
// arrives after that still counts (the exchange charged it), whether or
// not the budget has room. So spend passes a budget, on one node and
// across nodes, by at most the prices of the bids won or billed after
// their reservation expired: CampaignReport.LateBilledMicros per
// campaign, Stats.Late (personad_ledger_events_total{event="late_bill"})
// in number (TestLateNoticesBoundOverspend). It is zero when the
// reservation TTL (Config.ChannelTTL per channel) exceeds how late the
// exchange's notices come. Holding an unanswered reservation longer would
// trade it for delivery: most exchanges send no loss notice, so every
// lost bid would hold its price as long. A bill later than Retention past
// the deadline names a bid no longer remembered: ErrUnknownBid, its price
// counted only in Stats.UnknownBilledMicros, never as a campaign's spend.
//
// # A disk that refuses writes
//
// A write the disk refuses (ENOSPC, EROFS, EIO) is cut back to the last
// whole record and its records kept, in order, in memory: the notices and
// leases waiting for them fail with ErrNotDurable (naming the file and
// the error), LogErr reports it and Config.LogTrouble is told once. Each
// later batch, and the writer on its own every second, tries again, once
// (Stats.LogWriteFailures counts the attempts: TestOneWriteAttemptPerBatch);
// the first write that succeeds clears the trouble, and a notice sent
// again is acknowledged once its record is durable (TestWriteFailureRetried,
// TestIdleLogRetriesWrite). A rotation (below)
// whose new segment cannot be made (ENOSPC from its creation, the file
// system out of inodes or the directory unable to grow, or from the
// directory's fsync after it) is the same trouble: the half-made file is
// removed, no record goes to the old segment meanwhile (the records wait
// in memory), and each attempt makes the segment first
// (TestRefusedSegmentRetried). Meanwhile bids go on, but a budgeted
// campaign stops once its lease is spent (a lease must be durable), so
// spend stays within the durable bound; a Leaser is asked for no slice
// meanwhile, as one it granted could not be recorded and would be lost
// to every node (TestNoLeaseWhileLogFails). Past 64 MiB of records
// waiting, or after a failed fsync of records written (the kernel may
// have dropped pages it could not write: what reached the disk is
// unknown), the log is given up until a restart, which replays what the
// file holds, and its error says so (TestFsyncFailureGivesUp).
//
// # Durability and its bound
//
// With Config.Dir set every change is a CRC-framed record in an append-only
// log, written by one goroutine in batches, at most one write per
// SyncInterval (2 ms). A written record is in the kernel's page cache: it
// survives a crash of the process (kill -9), the standard personad holds
// itself to for what it acknowledged. The goroutine fsyncs (the record then
// also survives a power loss or an OS crash) only when someone waits for a
// record it has written, and otherwise at most MaxSyncDelay (100 ms) after
// a write, before a rotation and on Close: an fsync per batch kept it in a
// system call, holding one of the server's Ps, for a fifth to a third of
// that P's time under bid load (BENCHMARKS.md §2). Notices, leases and
// Flush wait for their record to be durable (fsynced, with everything
// before it); a repeated notice waits for the record of the one it
// repeats, whose caller may have given up first, and fails while the log
// has failed. Reservations do not wait: instead a campaign may only spend
// within a lease, a ceiling on its daily and total spend that is itself a
// log record, fsynced before the hot path may use it (the same mechanism as
// the Redis leases below). Replay after a crash counts as spent, per
// campaign, everything between the spend the log proves and the last
// durable ceiling, and logs that as a phantom record. So a crash never
// under-counts spend (a restart never resets it); the price of a crash is
// the unspent part of the campaign's ceiling counted as spent without an
// impression: less than two leases, because a refill tops the ceiling up
// only while less than one lease is still unspent, whatever asked for it
// (a change of the limits, as a rules reload makes, asks too;
// TestLimitChangesDoNotStackLeases), and a release that leaves two leases
// or more unspent (a reservation expiring unanswered, a loss, a bill
// below the bid: traffic falling at night, a campaign paused with
// reservations out) has the lease goroutine lower the ceiling to one
// lease above the spend (TestReleasesLowerTheLease) (measured: up to 1.38
// leases per SIGKILL). A grant checks the ceiling it published against
// the spend again: a release while it ran saw the ceiling before, which
// a raise computed from the spend before the release may leave two
// leases or more above it (TestReleaseDuringRaiseLowersTheLease). The bound holds once that lowered ceiling is
// written (fsynced, for a power loss): a crash in the moment between a release's record and the
// lowered ceiling's (the lease goroutine's turn and a write, some
// milliseconds) also counts what those releases freed. The spend never
// passes a ceiling a crash could replay: a lowered ceiling is published
// first, then every reservation shard's lock is taken and released (a
// reservation checks and adds to the spend under its shard's lock, so none
// admitted under the old ceiling is still in flight), and what is logged
// is the lowered ceiling or the spend by then, whichever is higher
// (TestSpendNeverPassesDurableCeiling). A lease is max(LeaseFraction of
// the budget, LeaseMinMicros, four times the largest price), capped at
// the budget: 0.5% of a large
// budget, but LeaseMinMicros (1.00) is 5% of a 20.00 daily budget. A clean
// Close returns the unused lease, so a clean restart loses nothing. What a
// crash loses beyond that is the reservations not yet in the log: in a
// crash of the process, those of the last batch not yet written (at most
// SyncInterval, 2 ms, of bids); in a power loss or OS crash, those not yet
// fsynced (some MaxSyncDelay, 100 ms, of bids; fewer when a notice or
// lease was fsynced after them). Their spend is covered by the lease
// (above), so what is lost is their frequency counts, the only state that
// errs the unsafe way, and the bids themselves: a notice for one is
// ErrUnknownBid.
//
// Every CompactBytes the log rotates to a new segment and a checkpoint is
// built in the background by replaying the previous checkpoint and the
// closed segments into a scratch ledger, so it never pauses the live one:
// temp file, fsync, rename, directory fsync, then the old files go. Open
// loads the newest checkpoint and replays the newer segments; a frame that
// is short or fails its CRC in the newest segment is a torn write and the
// file is truncated there; anywhere else it is ErrCorrupt and Open fails
// rather than guess.
//
// # Currency
//
// A campaign's amounts are micro-units of its currency (Limits.Currency),
// which the ledger records durably (Currencies): a change of it would
// relabel what the campaign holds (0.02 USD spent becoming 0.02 EUR, and
// the USD bids outstanding settling in EUR). SetCurrencies (and Campaign,
// for one campaign) refuses a change, all or nothing and changing
// nothing, while the campaign holds money in the old currency: spend, or
// a bid the ledger remembers (reserved, or finished within Retention: a
// late win or bill still counts it). The decision is atomic with
// bookings: the new currency is published first, then every reservation
// shard's lock is taken in turn while counting the campaign's bids (the
// barrier of a lowered ceiling, above: a reservation checks the currency
// and books under its shard's lock), and only then are its spend and
// bids read; a campaign that holds money gets its old currency back.
// From the published change on, ReserveIn refuses a bid priced in another
// currency than the recorded one (ErrCurrency): the engine passes the
// currency of the rules that priced the bid, so a decision still running
// on the rules being replaced books nothing the new currency would count
// (TestCurrencyChangeAtomicWithReservations). It costs a reservation one
// atomic load and a string comparison under the lock it holds; Allow is
// unchanged. A rules reload calls SetCurrencies before it persists or
// publishes a set, and again with the old currencies to undo a set that
// does not serve.
//
// # Many nodes
//
// With a Leaser (package ledger/redisledger) the leases come from a shared
// budget: each node takes a slice of a campaign's remaining daily and
// total budget with an atomic script, spends it locally, and refills in
// the background when it runs low. The sum of slices never passes the
// budget, so the nodes together never overspend; a node that cannot reach
// the backend spends what it holds, then stops (fail closed). A node
// whose spend fell gives back what it no longer needs as it lowers its
// ceiling (above), once the lowered ceiling is durable, so that other
// nodes can lease it (TestReleasesReturnLease); what it holds at Close it
// gives back too, also once the lowered ceiling is durable, so that a
// crash or a lost reply leaves the backend counting more than the node
// holds, never less (TestCloseReturnThenCrash), and of a daily budget
// today's lease only: another day's counter may have expired
// (TestCloseAfterIdleDays). A change of the limits that lowers a budget gives back
// all of it that is unspent before leasing anew under the new budget:
// each node checks a budget against its own spend only, so a lease held
// past a lowered budget would be spent (TestLoweredBudgetAcrossNodes).
// Each lease and return names what the node already
// holds (LeaseRequest.HeldDaily, HeldTotal), so that a backend that lost
// its counters (a Redis restarted without persistence) refuses rather
// than lease the budget a second time: the node fails closed
// (TestRedisLostStateFailsClosed). A lease or return call that fails
// without a definite answer (a timeout, a connection error: the backend
// may have applied it) is sent again, same ID and amounts, on the next
// attempt for the campaign (after the lease goroutine's backoff) within
// RetryWindow (an hour) of its first call, and the
// backend answers a repeated ID with what it did the first time: so a
// backend slower than LeaseTimeout costs the node no slice it granted
// (TestLeaseTimeoutKeepsGrant), nor the other nodes a return it missed
// (TestReturnTimeoutGivenAgain). A refusal (ErrLeaseRefused, as a backend
// that lost its state answers) is not asked again; nor is a lease once
// the day or the budgets changed, or a return for another day, nor a call
// past RetryWindow, whose ID the backend may have forgotten
// (TestNoReturnGivenAgainPastRetryWindow): what
// those granted stays counted as leased, the safe direction. When the
// backend grants nothing (the other nodes hold the rest of the budget,
// or it is spent), bids ask again only after LeaseRetry (1 s), not on
// every bid: each ask is a round trip of the one lease goroutine, which
// campaigns with budget left would wait behind; a change of the limits
// asks at once (TestSpentBudgetAsksRarely). A FrequencyShare shares
// frequency counts: each node counts its impressions in Redis and caches
// the counts it read. The decision only reads that cache; the read from
// Redis happens before it, outside the engine: the bidder calls
// WarmFrequency at request arrival, which gives a share that is a
// FrequencyWarmer the caps the decision may ask about (the engine's
// FrequencyCaps: the capped campaigns the request's persona, channel and
// sizes leave, not every capped campaign of the rules), and the share
// reads, in one round trip bounded by the request's deadline and a few
// milliseconds (redisledger Options.FetchWait), the counts it has not read
// within the last 100 ms (Options.Refresh). When none comes in time the
// decision caps a user the share does not know and judges another by its
// older count (package ledger/redisledger tells what a cap can still
// miss). Without such a share WarmFrequency returns at once and allocates
// nothing.
//
// # Even pacing
//
// The controller follows Agarwal et al., "Budget Pacing for Targeted
// Online Advertisements at LinkedIn" (KDD 2014): each even campaign has a
// pass-through rate p in [MinRate, 1]; Allow lets a request through when
// the caller's random number falls under p. Every ControlInterval (Tick)
// the controller, per campaign:
//
//  1. books the Allow calls counted since the last step (the campaign's
//     traffic) into today's hour-of-day histogram; at the end of a day the
//     histogram's shares are folded into the campaign's traffic profile by
//     exponential smoothing (ProfileSmoothing). A ledger-wide profile,
//     learned the same way from all traffic, stands in until a campaign
//     has its own; before any day is learned a generic diurnal prior
//     stands in (a night floor under a broad afternoon peak, in the
//     day's time zone: priorProfile);
//  2. estimates the day's traffic level L (its total requests): today's
//     count so far over the profile's expected share by now, F(t), blended
//     with yesterday's total by how many hours' worth of today has been
//     seen (n effective hours, weight n / (n + 1)): one hour is noisy, but
//     the level moves from day to day, and a back-loaded profile keeps
//     F(t) small for most of the day, so F(t) itself is not the weight.
//     Under the prior, L is the last hour or two of traffic over the
//     prior's share of that span, so that the prior's shape errors far
//     from now do not skew the rest-of-day estimate;
//  3. re-plans the rest of the day: with R the daily budget not yet spent,
//     the rest of the day is expected to bring L × (1 − F(t)) requests, and
//     one request at rate 1 brings s (the spend over rate × requests,
//     exponentially decayed sums over about 20 intervals, a ratio of sums
//     so that quiet intervals count), so p = R / (s × L × (1 − F(t))):
//     spend then follows the traffic as it comes, and an error made
//     earlier is spread over the rest of the day rather than corrected at
//     once. p changes by at most a factor of three per step.
//
// The pacing simulator measures the controller (`personabench pace`, or
// `go test -run TestSimulate -v ./ledger/pacesim -sim`; figures in
// BENCHMARKS.md).
//
// The controller takes its time from Tick's argument, so a simulator (see
// package ledger/pacesim) runs a day of traffic in seconds.
package ledger
