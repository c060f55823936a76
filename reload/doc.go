// Package reload keeps the engine's rules current. A rule set has two ways
// in — the --rules file or directory, which a Manager watches, and Apply
// (the personad.v1.Rules service) — and one pipeline: validate the whole
// set, compile it (reusing every unchanged campaign from the compile
// cache), swap it into the engine with one atomic pointer store. An invalid
// set is rejected whole; the last good set keeps serving; the rejection is
// logged once for each change or write of the files, counted, and
// reported by Status.
//
// Which source wins is simple: the last writer. A change to the files
// replaces the active set, even one applied through the API, and so does
// writing them again with the bytes they held once their modification
// time is after the Apply (a restart would serve them); an Apply replaces
// the active set, even one loaded from the files. An applied set
// is persisted atomically in <data-dir>/rules-applied/current.json (its
// JSON encoded while the set compiles, written and fsynced before the
// swap, so an acknowledged Apply survives a crash; a disk that refuses it
// fails the Apply with ErrNotPersisted, nothing applied), with the rules files
// as the Manager last read them (their digest, names and contents, and
// modification times). At start the Manager serves that set unless the
// files replace it as they would have live: their bytes changed since
// that read (an edit made while personad was down, whatever time it
// kept), or one was written after the Apply with the bytes it held (its
// time moved past theirs and is not before the Apply); files only
// removed, or renamed or moved in with a time before the Apply, do not.
// A file's time alone decides nothing: a file whose time is in the
// future (clock skew, touch -d, a copy with its times kept) and that did
// not change since does not replace a later Apply. A set persisted by an
// earlier personad, without the files, is decided as it was then: the
// newer of that set (by the time it was applied) and the files (by their
// newest modification time); the next Apply records them. The source
// chosen must be valid, or New fails. Once the files replace the
// set applied through the API — live, or at start — or, holding the same
// set, become its source, the persisted set is removed (durably, before
// the swap), so that a restart serves what the
// live server served: a file copied in with its older time kept (cp -p,
// rsync -a, tar) changes the files' bytes, and is applied, but would
// otherwise lose to the persisted set at the next start.
//
// A set that changes a campaign's currency is refused, whole, while the
// ledger holds money for that campaign in its recorded currency (spend,
// or bids a notice may still count): the ledger decides it
// (ledger.SetCurrencies) atomically with its bookings, before the set is
// persisted or swapped in, and from then on refuses bids that the rules
// still serving price in the old currency, so none books spend that the
// new set would count in its currency; a set that then fails to persist
// gives the ledger its old currencies back. The ledger records
// currencies durably, so a change made while personad was down is
// refused at start. Validate reports it as Apply would.
//
// The watcher watches the directory (the --rules directory, or the
// directory holding the --rules file), not the file, so that editors that
// write a temporary file and rename it over the old one, `mv tmp
// rules.yaml` and Kubernetes ConfigMap symlink swaps are all seen. Events
// are debounced, and files whose bytes did not change are not reloaded
// (unless written after an Apply, above).
// On Linux a file written in place is read only once no process has it
// open for writing (a kernel lease, fcntl F_SETLEASE, tells), so that a
// writer pausing mid-file does not get its first part applied; write
// elsewhere and rename for the same guarantee on other systems. Rules
// files that read blank (white space only) while a set is serving are
// refused: a save in place read between its truncation and its write
// would otherwise serve no campaigns (and go on serving none if what
// was written next were refused). `campaigns: []` serves none; a blank
// file at start is an empty set, as before.
// A reload parses only what changed: the Manager's rules.Parser reuses
// every file whose bytes are the same and, in a changed file, every
// campaign entry whose text is the same, so a one-campaign edit of a
// 10,000-campaign file parses one campaign. The Parser's sets are never
// modified, so they are compiled with engine.(*Compiler).CompileImmutable:
// the campaigns the Parser reused share their memory with the last set
// compiled, which tells the Compiler they are unchanged without reading
// them.
package reload
