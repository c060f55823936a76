// Package segments holds audience segments: one roaring bitmap of dense
// internal user ids per (facet, value), a dictionary from external user ids
// to internal ids, and an immutable Snapshot of both published by atomic
// pointer swap so that readers never lock.
package segments
