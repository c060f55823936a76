// Package segments holds audience segments: one roaring bitmap of dense
// internal user ids per (facet, value), a dictionary from external user ids
// to internal ids, and an immutable Snapshot of both published by atomic
// pointer swap so that readers never lock.
//
// # Reading
//
// A decision calls Store.Current once and uses that Snapshot throughout:
// Snapshot.User maps an external id to its internal id and
// Snapshot.Segment finds a segment's bitmap; neither allocates nor locks.
// The dictionary (Dict) is one byte arena of ids, their end offsets and an
// open-addressing table of 64-bit slots, each a 32-bit hash tag and the id; its cost per
// user is measured in its documentation. Arrays of 1 MB and more live
// outside the Go heap (offheap.go), so that a large upload's growth does
// not start garbage collections of the whole heap.
//
// # Writing
//
// A Builder assembles a new Snapshot to the side; Store.Publish swaps it
// in. Nothing a published snapshot can see is ever modified (the
// dictionary grows past the end of a published view, see Dict). An Upload
// resolves its ids while they stream in, interning new ones as staged
// users of the store's dictionary, beyond every published view (see
// stage); Store.Commit then only builds the segment's bitmap, logs and
// publishes.
//
// # Durability
//
// A store's directory holds one snapshot file, SnapshotFile, in the format
// documented in file.go: a header with the store version,
// the user dictionary and every segment in roaring's portable
// serialization, each section with its own CRC-32C, and an end section.
// WriteSnapshot writes it atomically and durably (temp file, fsync,
// rename, directory fsync); Open loads it and reports any damage as a
// *CorruptError naming the file, section and offset. The write-ahead log
// of uploads extends this: it records changes after the snapshot's store
// version, and recovery replays them over the snapshot. A change whose
// record the disk refuses (full, read-only) is not applied, ErrNotApplied
// (an ErrNotDurable) naming the file and the error, and the log is cut back to its last whole
// record, so the next change may succeed; after a failed fsync the log
// takes no more changes until a restart, and Store.LogErr says why.
package segments
