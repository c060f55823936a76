package rules

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// This file decodes a parsed YAML document (yaml.Node) straight into a
// RuleSet. It replaces the route yaml → any → JSON → struct, which spent
// half of a large file's parse re-encoding it, and names the line of every
// error. It keeps that route's semantics exactly (FuzzParseEquivalence
// checks the two against each other); both take field names with their
// exact case, as proto field names are (the JSON route checks the keys
// itself, since encoding/json would accept "ID" for "id").
//
// The walker handles what rules files are made of: mappings with plain
// keys, sequences, and scalars resolved by YAML 1.2's core schema (string,
// int, float, null, bool). A document that uses anything else — aliases,
// merge keys (<<), explicit tags — goes through the JSON route
// (parseViaJSON), whose semantics are yaml.v3's own; its errors name the
// field path but not the line.

// errFallback stops the walker at a construct it leaves to parseViaJSON.
var errFallback = errors.New("rules: use the generic route")

// path is a field path built only when an error needs it: a chain of
// parents on the stack.
type path struct {
	parent *path
	field  string // "" for an index
	index  int
}

func (p *path) String() string {
	if p == nil {
		return ""
	}
	var b strings.Builder
	p.write(&b)
	return b.String()
}

// write writes the path root first. It keeps no pointer to p, so that
// paths stay on the stack.
func (p *path) write(b *strings.Builder) {
	if p.parent != nil {
		p.parent.write(b)
	}
	if p.field == "" {
		b.WriteByte('[')
		b.WriteString(strconv.Itoa(p.index))
		b.WriteByte(']')
		return
	}
	if b.Len() > 0 {
		b.WriteByte('.')
	}
	b.WriteString(p.field)
}

// nodeError is an error at a node of the document.
func nodeError(n *yaml.Node, p *path, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if s := p.String(); s != "" {
		msg = s + ": " + msg
	}
	return fmt.Errorf("line %d: %s", n.Line, msg)
}

// fields checks a mapping node and calls f for each key and value. It
// refuses duplicate keys (as yaml.v3 does), keys that are not plain
// strings, merge keys and aliases (left to the JSON route), and anything
// but a mapping or null; for null it calls nothing.
func fields(n *yaml.Node, p *path, f func(key string, k, v *yaml.Node) error) error {
	switch n.Kind {
	case yaml.MappingNode:
	case yaml.AliasNode:
		return errFallback
	default:
		if isNull(n) {
			return nil
		}
		return mismatch(n, p, "a mapping")
	}
	if n.Style&yaml.TaggedStyle != 0 {
		return errFallback
	}
	c := n.Content
	for i := 0; i+1 < len(c); i += 2 {
		k := c[i]
		if k.Kind != yaml.ScalarNode || k.Style&yaml.TaggedStyle != 0 || k.Value == "<<" {
			return errFallback
		}
		for j := 0; j < i; j += 2 {
			if c[j].Value == k.Value {
				return nodeError(k, p, "mapping key %q already defined at line %d", k.Value, c[j].Line)
			}
		}
	}
	for i := 0; i+1 < len(c); i += 2 {
		if err := f(c[i].Value, c[i], c[i+1]); err != nil {
			return err
		}
	}
	return nil
}

// unknownField is the error for a key that names no field.
func unknownField(k *yaml.Node, p *path, known ...string) error {
	for _, f := range known {
		if strings.EqualFold(f, k.Value) {
			return nodeError(k, p, "unknown field %q (field names are case-sensitive: %q)", k.Value, f)
		}
	}
	return nodeError(k, p, "unknown field %q", k.Value)
}

// items checks a sequence node and returns its items; null is none.
func items(n *yaml.Node, p *path) ([]*yaml.Node, bool, error) {
	switch n.Kind {
	case yaml.SequenceNode:
		if n.Style&yaml.TaggedStyle != 0 {
			return nil, false, errFallback
		}
		return n.Content, true, nil
	case yaml.AliasNode:
		return nil, false, errFallback
	}
	if isNull(n) {
		return nil, false, nil
	}
	return nil, false, mismatch(n, p, "a list")
}

// sliceOf checks a sequence node and makes the slice for its items: nil
// for null, empty (not nil) for [], as encoding/json leaves them. Each
// caller decodes the items in a loop of its own, calling the item's
// decoder directly: through a function value, the item's path would
// escape to the heap.
func sliceOf[T any](n *yaml.Node, p *path, dst *[]T) ([]*yaml.Node, error) {
	its, ok, err := items(n, p)
	if err != nil || !ok {
		*dst = nil
		return nil, err
	}
	*dst = make([]T, len(its))
	return its, nil
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Style&yaml.TaggedStyle == 0 && n.ShortTag() == "!!null"
}

// scalar checks that n is a scalar the walker resolves itself and returns
// its tag.
func scalar(n *yaml.Node) (string, error) {
	if n.Kind != yaml.ScalarNode {
		if n.Kind == yaml.AliasNode {
			return "", errFallback
		}
		return "", nil
	}
	if n.Style&yaml.TaggedStyle != 0 {
		return "", errFallback
	}
	return n.ShortTag(), nil
}

// kindOf names what a node holds, for type errors.
func kindOf(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	v := n.Value
	if len(v) > 40 {
		v = v[:37] + "..."
	}
	switch n.ShortTag() {
	case "!!int", "!!float":
		return "number " + v
	case "!!bool":
		return "bool " + v
	}
	return fmt.Sprintf("string %q", v)
}

func mismatch(n *yaml.Node, p *path, want string) error {
	return nodeError(n, p, "cannot use %s here, want %s", kindOf(n), want)
}

// decodeString decodes a string scalar; null leaves "". Invalid UTF-8
// (which a double-quoted escape can make) becomes U+FFFD byte by byte, as
// the JSON route did.
func decodeString(n *yaml.Node, p *path, dst *string) error {
	tag, err := scalar(n)
	if err != nil {
		return err
	}
	switch tag {
	case "!!str":
		*dst = validUTF8(n.Value)
		return nil
	case "!!null":
		*dst = ""
		return nil
	case "!!timestamp":
		// An unquoted date-time: the JSON route turned it into a
		// time.Time and back into RFC 3339 text.
		var v any
		if err := n.Decode(&v); err != nil {
			return nodeError(n, p, "%v", err)
		}
		t, ok := v.(time.Time)
		if !ok {
			return errFallback
		}
		js, err := t.MarshalJSON()
		if err != nil {
			return nodeError(n, p, "%v", err)
		}
		*dst = strings.Trim(string(js), `"`)
		return nil
	case "!!float":
		if err := finite(n, p); err != nil {
			return err
		}
		return mismatch(n, p, "a string")
	case "", "!!int", "!!bool":
		return mismatch(n, p, "a string")
	}
	return errFallback
}

func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b.WriteString("\uFFFD")
		} else {
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

func decodeStrings(n *yaml.Node, p *path, dst *[]string) error {
	its, err := sliceOf(n, p, dst)
	for i, it := range its {
		ip := path{parent: p, index: i}
		if err := decodeString(it, &ip, &(*dst)[i]); err != nil {
			return err
		}
	}
	return err
}

func decodeCampaigns(n *yaml.Node, p *path, dst *[]Campaign) error {
	its, err := sliceOf(n, p, dst)
	for i, it := range its {
		ip := path{parent: p, index: i}
		if err := decodeCampaign(it, &ip, &(*dst)[i]); err != nil {
			return err
		}
	}
	return err
}

func decodeClauses(n *yaml.Node, p *path, dst *[]Clause) error {
	its, err := sliceOf(n, p, dst)
	for i, it := range its {
		ip := path{parent: p, index: i}
		if err := decodeClause(it, &ip, &(*dst)[i]); err != nil {
			return err
		}
	}
	return err
}

func decodeCreatives(n *yaml.Node, p *path, dst *[]Creative) error {
	its, err := sliceOf(n, p, dst)
	for i, it := range its {
		ip := path{parent: p, index: i}
		if err := decodeCreative(it, &ip, &(*dst)[i]); err != nil {
			return err
		}
	}
	return err
}

func decodeChannelMap(n *yaml.Node, p *path, dst *[]ChannelMapping) error {
	its, err := sliceOf(n, p, dst)
	for i, it := range its {
		ip := path{parent: p, index: i}
		if err := decodeChannelMapping(it, &ip, &(*dst)[i]); err != nil {
			return err
		}
	}
	return err
}

// number resolves an int or float scalar as yaml.v3 does. ok is false
// for null.
func number(n *yaml.Node, p *path, want string) (f float64, ok bool, err error) {
	tag, err := scalar(n)
	if err != nil {
		return 0, false, err
	}
	switch tag {
	case "!!null":
		return 0, false, nil
	case "!!int":
		if simpleInt(n.Value) {
			if v, err := strconv.ParseInt(n.Value, 10, 64); err == nil {
				return float64(v), true, nil
			}
		}
	case "!!float":
		if simpleFloat(n.Value) {
			if v, err := strconv.ParseFloat(n.Value, 64); err == nil {
				return v, true, nil
			}
		}
	case "", "!!str", "!!bool", "!!timestamp":
		return 0, false, mismatch(n, p, want)
	default:
		return 0, false, errFallback
	}
	// Hexadecimal, octal, underscores, .inf and the like: let yaml.v3
	// resolve it.
	var v any
	if err := n.Decode(&v); err != nil {
		return 0, false, nodeError(n, p, "%v", err)
	}
	switch v := v.(type) {
	case int:
		return float64(v), true, nil
	case int64:
		return float64(v), true, nil
	case uint64:
		return float64(v), true, nil
	case float64:
		if math.IsInf(v, 0) || math.IsNaN(v) {
			return 0, false, nodeError(n, p, "unsupported value: %s", n.Value)
		}
		return v, true, nil
	}
	return 0, false, mismatch(n, p, want)
}

// finite rejects .inf and .nan wherever they appear, as the JSON route did
// (JSON has no form for them).
func finite(n *yaml.Node, p *path) error {
	_, _, err := number(n, p, "a number")
	return err
}

func simpleInt(s string) bool {
	if s != "" && s[0] == '-' {
		s = s[1:]
	}
	if s == "" || len(s) > 18 || (s[0] == '0' && len(s) > 1) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// simpleFloat is [-]digits[.digits][e[+-]digits] with no underscores: what
// strconv.ParseFloat reads exactly as yaml.v3 does.
func simpleFloat(s string) bool {
	if s != "" && (s[0] == '-' || s[0] == '+') {
		s = s[1:]
	}
	digits := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9':
			digits++
		case c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-':
		default:
			return false
		}
	}
	return digits > 0
}

func decodeFloat(n *yaml.Node, p *path, dst *float64) error {
	f, ok, err := number(n, p, "a number")
	if err != nil {
		return err
	}
	if !ok {
		*dst = 0
		return nil
	}
	*dst = f
	return nil
}

// decodeInt32 decodes a whole number in int32's range; a float with no
// fraction (300.0, 3e2) is one, as it was through JSON.
func decodeInt32(n *yaml.Node, p *path, dst *int32) error {
	f, ok, err := number(n, p, "a whole number")
	if err != nil {
		return err
	}
	if !ok {
		*dst = 0
		return nil
	}
	if f != math.Trunc(f) || f < math.MinInt32 || f > math.MaxInt32 {
		return nodeError(n, p, "cannot use number %s here, want a whole number within ±2^31", n.Value)
	}
	*dst = int32(f)
	return nil
}

// decodeRuleSet decodes a document's root node.
func decodeRuleSet(n *yaml.Node, rs *RuleSet) error {
	return fields(n, nil, func(key string, k, v *yaml.Node) error {
		p := &path{field: key}
		switch key {
		case "campaigns":
			return decodeCampaigns(v, p, &rs.Campaigns)
		case "content_rules":
			return decodeContentRules(v, p, &rs.ContentRules)
		}
		return unknownField(k, nil, "campaigns", "content_rules")
	})
}

var campaignFields = []string{"id", "advertiser", "adomain", "status", "start", "end", "priority", "bid_cpm",
	"currency", "budget", "pacing", "frequency_cap", "cat", "targeting", "creatives"}

func decodeCampaign(n *yaml.Node, cp *path, c *Campaign) error {
	return fields(n, cp, func(key string, k, v *yaml.Node) error {
		p := &path{parent: cp, field: key}
		switch key {
		case "id":
			return decodeString(v, p, &c.ID)
		case "advertiser":
			return decodeString(v, p, &c.Advertiser)
		case "adomain":
			return decodeStrings(v, p, &c.Adomain)
		case "status":
			return decodeString(v, p, &c.Status)
		case "start":
			return decodeString(v, p, &c.Start)
		case "end":
			return decodeString(v, p, &c.End)
		case "priority":
			var x int32
			if isNull(v) {
				c.Priority = nil
				return nil
			}
			if err := decodeInt32(v, p, &x); err != nil {
				return err
			}
			c.Priority = &x
			return nil
		case "bid_cpm":
			return decodeFloat(v, p, &c.BidCPM)
		case "currency":
			return decodeString(v, p, &c.Currency)
		case "budget":
			return fields(v, p, func(key string, k, v *yaml.Node) error {
				bp := &path{parent: p, field: key}
				switch key {
				case "daily":
					return decodeFloat(v, bp, &c.Budget.Daily)
				case "total":
					return decodeFloat(v, bp, &c.Budget.Total)
				}
				return unknownField(k, p, "daily", "total")
			})
		case "pacing":
			return decodeString(v, p, &c.Pacing)
		case "frequency_cap":
			return fields(v, p, func(key string, k, v *yaml.Node) error {
				fp := &path{parent: p, field: key}
				switch key {
				case "max":
					return decodeInt32(v, fp, &c.FrequencyCap.Max)
				case "window":
					return decodeString(v, fp, &c.FrequencyCap.Window)
				}
				return unknownField(k, p, "max", "window")
			})
		case "cat":
			return decodeStrings(v, p, &c.Cat)
		case "targeting":
			return fields(v, p, func(key string, k, v *yaml.Node) error {
				tp := &path{parent: p, field: key}
				switch key {
				case "all":
					return decodeClauses(v, tp, &c.Targeting.All)
				case "none":
					return decodeClauses(v, tp, &c.Targeting.None)
				case "channels":
					return decodeStrings(v, tp, &c.Targeting.Channels)
				}
				return unknownField(k, p, "all", "none", "channels")
			})
		case "creatives":
			return decodeCreatives(v, p, &c.Creatives)
		}
		return unknownField(k, cp, campaignFields...)
	})
}

func decodeClause(n *yaml.Node, cp *path, c *Clause) error {
	return fields(n, cp, func(key string, k, v *yaml.Node) error {
		p := &path{parent: cp, field: key}
		switch key {
		case "facet":
			return decodeString(v, p, &c.Facet)
		case "any":
			return decodeStrings(v, p, &c.Any)
		}
		return unknownField(k, cp, "facet", "any")
	})
}

func decodeCreative(n *yaml.Node, cp *path, c *Creative) error {
	return fields(n, cp, func(key string, k, v *yaml.Node) error {
		p := &path{parent: cp, field: key}
		switch key {
		case "id":
			return decodeString(v, p, &c.ID)
		case "w":
			return decodeInt32(v, p, &c.W)
		case "h":
			return decodeInt32(v, p, &c.H)
		case "channels":
			return decodeStrings(v, p, &c.Channels)
		case "cat":
			return decodeStrings(v, p, &c.Cat)
		case "persona":
			return decodeClauses(v, p, &c.Persona)
		case "adm":
			return decodeString(v, p, &c.Adm)
		}
		return unknownField(k, cp, "id", "w", "h", "channels", "cat", "persona", "adm")
	})
}

func decodeContentRules(n *yaml.Node, cp *path, cr *ContentRules) error {
	return fields(n, cp, func(key string, k, v *yaml.Node) error {
		p := &path{parent: cp, field: key}
		switch key {
		case "blocked_cat":
			return decodeStrings(v, p, &cr.BlockedCat)
		case "blocked_adomain":
			return decodeStrings(v, p, &cr.BlockedAdomain)
		case "channel_map":
			return decodeChannelMap(v, p, &cr.ChannelMap)
		}
		return unknownField(k, cp, "blocked_cat", "blocked_adomain", "channel_map")
	})
}

func decodeChannelMapping(n *yaml.Node, mp *path, m *ChannelMapping) error {
	return fields(n, mp, func(key string, k, v *yaml.Node) error {
		p := &path{parent: mp, field: key}
		switch key {
		case "channel":
			return decodeString(v, p, &m.Channel)
		case "domains":
			return decodeStrings(v, p, &m.Domains)
		case "bundles":
			return decodeStrings(v, p, &m.Bundles)
		}
		return unknownField(k, mp, "channel", "domains", "bundles")
	})
}
