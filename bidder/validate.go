package bidder

import (
	"fmt"
	"math"

	personadpb "github.com/personad/personad/proto/personad/v1"
)

// OpenRTB 2.6 takes device.devicetype and banner.pos from AdCOM 1.0
// lists (Device Types, Placement Positions), which grow (device type 8,
// out-of-home, came after OpenRTB 2.5) and reserve 500 and above for
// exchange-specific values. personad reads neither field, so a value past
// today's list is accepted, not refused: refusing it would turn away a
// valid request. Only a negative value, which no list holds, is invalid.

// validate checks req against the limits and returns the first problem as
// a *ValidationError, or nil. Paths are built only on failure, so a valid
// request costs no allocation here.
func validate(req *personadpb.BidRequest, l *Limits) error {
	if req.GetId() == "" {
		return invalid("id", "required")
	}
	if err := checkLen("id", "", req.Id, l.MaxString); err != nil {
		return err
	}
	if len(req.Imp) == 0 {
		return invalid("imp", "at least one impression is required")
	}
	if len(req.Imp) > l.MaxImps {
		return invalid("imp", fmt.Sprintf("%d impressions exceeds the limit of %d", len(req.Imp), l.MaxImps))
	}
	for i, imp := range req.Imp {
		if err := validateImp(i, imp, l); err != nil {
			return err
		}
		// Duplicate ids: n is at most MaxImps, so the quadratic scan is
		// cheaper than a map.
		for j := range i {
			if req.Imp[j].GetId() == imp.Id {
				return invalid(fmt.Sprintf("imp[%d].id", i), fmt.Sprintf("duplicate impression id %q (also imp[%d])", imp.Id, j))
			}
		}
	}
	if req.Site != nil && req.App != nil {
		return invalid("app", "site and app are mutually exclusive; set one")
	}
	if s := req.Site; s != nil {
		if err := validateDist("site", s.Id, s.Name, s.Domain, "", s.Cat, s.Publisher, s.Ext, l); err != nil {
			return err
		}
		if err := checkLen("site", ".page", s.Page, l.MaxLongString); err != nil {
			return err
		}
	}
	if a := req.App; a != nil {
		if err := validateDist("app", a.Id, a.Name, a.Domain, a.Bundle, a.Cat, a.Publisher, a.Ext, l); err != nil {
			return err
		}
	}
	if err := validateDevice(req.Device, l); err != nil {
		return err
	}
	if err := validateUser(req.User, l); err != nil {
		return err
	}
	if req.Test != 0 && req.Test != 1 {
		return invalid("test", fmt.Sprintf("%d is not 0 or 1", req.Test))
	}
	if req.Tmax < 0 {
		return invalid("tmax", fmt.Sprintf("%d must be >= 0", req.Tmax))
	}
	if len(req.Cur) > l.MaxCur {
		return invalid("cur", fmt.Sprintf("%d currencies exceeds the limit of %d", len(req.Cur), l.MaxCur))
	}
	for i, c := range req.Cur {
		if !isCurrency(c) {
			return invalid(fmt.Sprintf("cur[%d]", i), fmt.Sprintf("%q is not an ISO-4217 code (three upper-case letters)", c))
		}
	}
	if err := checkList("bcat", "", req.Bcat, l.MaxBCat, l.MaxString); err != nil {
		return err
	}
	if req.Cattax < 0 {
		return invalid("cattax", fmt.Sprintf("%d is not an AdCOM category taxonomy: want 0 (unset: IAB Content Category Taxonomy 1.0) or a taxonomy id, 1 and up", req.Cattax))
	}
	if err := checkList("badv", "", req.Badv, l.MaxBAdv, l.MaxString); err != nil {
		return err
	}
	if r := req.Regs; r != nil {
		if r.Coppa != 0 && r.Coppa != 1 {
			return invalid("regs.coppa", fmt.Sprintf("%d is not 0 or 1", r.Coppa))
		}
		if r.Gdpr != 0 && r.Gdpr != 1 {
			return invalid("regs.gdpr", fmt.Sprintf("%d is not 0 or 1", r.Gdpr))
		}
		if err := checkLen("regs", ".us_privacy", r.UsPrivacy, l.MaxString); err != nil {
			return err
		}
	}
	return nil
}

func validateImp(i int, imp *personadpb.Imp, l *Limits) error {
	p := func(field string) string { return fmt.Sprintf("imp[%d]%s", i, field) }
	if imp.GetId() == "" {
		return invalid(p(".id"), "required")
	}
	if len(imp.Id) > l.MaxString {
		return invalid(p(".id"), tooLong(len(imp.Id), l.MaxString))
	}
	b := imp.Banner
	if b == nil {
		return invalid(p(".banner"), "required: personad bids on banner impressions only")
	}
	if len(b.Format) > l.MaxFormats {
		return invalid(p(".banner.format"), fmt.Sprintf("%d formats exceeds the limit of %d", len(b.Format), l.MaxFormats))
	}
	for j, f := range b.Format {
		if f == nil {
			return invalid(fmt.Sprintf("imp[%d].banner.format[%d]", i, j), "required")
		}
		// wmin is a flex ad's, but checked in any format (the proto
		// says >= 0): it is not read, and a negative one is nonsense.
		if f.Wmin < 0 {
			return invalid(fmt.Sprintf("imp[%d].banner.format[%d].wmin", i, j), fmt.Sprintf("%d must be >= 0", f.Wmin))
		}
		if f.W == 0 && f.H == 0 && (f.Wratio != 0 || f.Hratio != 0) {
			// A flex ad's format: valid, and passed over (flexSize).
			for _, r := range [...]struct {
				field string
				v     int32
			}{{"wratio", f.Wratio}, {"hratio", f.Hratio}} {
				if r.v <= 0 {
					return invalid(fmt.Sprintf("imp[%d].banner.format[%d].%s", i, j, r.field), "must be > 0 in a flex format (one without w and h)")
				}
			}
			continue
		}
		if msg := dimension(f.W, l.MaxDimension); msg != "" {
			return invalid(fmt.Sprintf("imp[%d].banner.format[%d].w", i, j), msg)
		}
		if msg := dimension(f.H, l.MaxDimension); msg != "" {
			return invalid(fmt.Sprintf("imp[%d].banner.format[%d].h", i, j), msg)
		}
	}
	if len(b.Format) == 0 {
		if b.W == 0 && b.H == 0 {
			return invalid(p(".banner"), "no size: set format or w and h")
		}
		if msg := dimension(b.W, l.MaxDimension); msg != "" {
			return invalid(p(".banner.w"), msg)
		}
		if msg := dimension(b.H, l.MaxDimension); msg != "" {
			return invalid(p(".banner.h"), msg)
		}
	} else {
		// With format set, w and h are informational but still sane.
		if b.W != 0 {
			if msg := dimension(b.W, l.MaxDimension); msg != "" {
				return invalid(p(".banner.w"), msg)
			}
		}
		if b.H != 0 {
			if msg := dimension(b.H, l.MaxDimension); msg != "" {
				return invalid(p(".banner.h"), msg)
			}
		}
	}
	if b.Pos < 0 {
		return invalid(p(".banner.pos"), fmt.Sprintf("%d is not an AdCOM placement position (>= 0)", b.Pos))
	}
	switch f := imp.Bidfloor; {
	case math.IsNaN(f) || math.IsInf(f, 0):
		return invalid(p(".bidfloor"), fmt.Sprintf("%v is not a number", f))
	case f < 0:
		return invalid(p(".bidfloor"), fmt.Sprintf("%v must be >= 0", f))
	}
	// A floor above every bid is valid: the impression gets no bid (stage
	// floor, or currency when bidfloorcur is not the campaigns'), and the
	// request's other impressions are decided as usual.
	if imp.Bidfloorcur != "" && !isCurrency(imp.Bidfloorcur) {
		return invalid(p(".bidfloorcur"), fmt.Sprintf("%q is not an ISO-4217 code (three upper-case letters)", imp.Bidfloorcur))
	}
	if len(imp.Tagid) > l.MaxString {
		return invalid(p(".tagid"), tooLong(len(imp.Tagid), l.MaxString))
	}
	if imp.Secure != 0 && imp.Secure != 1 {
		return invalid(p(".secure"), fmt.Sprintf("%d is not 0 or 1", imp.Secure))
	}
	return nil
}

func validateDist(obj, id, name, domain, bundle string, cat []string, pub *personadpb.Publisher, ext *personadpb.DistributionExt, l *Limits) error {
	for _, f := range [...]struct{ field, v string }{{".id", id}, {".name", name}, {".domain", domain}, {".bundle", bundle}} {
		if err := checkLen(obj, f.field, f.v, l.MaxString); err != nil {
			return err
		}
	}
	if err := checkList(obj, ".cat", cat, l.MaxCat, l.MaxString); err != nil {
		return err
	}
	if pub != nil {
		for _, f := range [...]struct{ field, v string }{{".publisher.id", pub.Id}, {".publisher.name", pub.Name}, {".publisher.domain", pub.Domain}} {
			if err := checkLen(obj, f.field, f.v, l.MaxString); err != nil {
				return err
			}
		}
	}
	if ext != nil {
		if err := checkLen(obj, ".ext.channel", ext.Channel, l.MaxString); err != nil {
			return err
		}
	}
	return nil
}

func validateDevice(d *personadpb.Device, l *Limits) error {
	if d == nil {
		return nil
	}
	if d.Devicetype < 0 {
		return invalid("device.devicetype", fmt.Sprintf("%d is not an AdCOM device type (>= 0)", d.Devicetype))
	}
	if err := checkLen("device", ".ua", d.Ua, l.MaxLongString); err != nil {
		return err
	}
	for _, f := range [...]struct{ field, v string }{{".ip", d.Ip}, {".os", d.Os}, {".language", d.Language}} {
		if err := checkLen("device", f.field, f.v, l.MaxString); err != nil {
			return err
		}
	}
	if g := d.Geo; g != nil {
		if err := checkLen("device.geo", ".country", g.Country, l.MaxString); err != nil {
			return err
		}
		if err := checkLen("device.geo", ".region", g.Region, l.MaxString); err != nil {
			return err
		}
	}
	return nil
}

func validateUser(u *personadpb.User, l *Limits) error {
	if u == nil {
		return nil
	}
	if err := checkLen("user", ".id", u.Id, l.MaxString); err != nil {
		return err
	}
	if err := checkLen("user", ".buyeruid", u.Buyeruid, l.MaxString); err != nil {
		return err
	}
	if len(u.Data) > l.MaxData {
		return invalid("user.data", fmt.Sprintf("%d data entries exceeds the limit of %d", len(u.Data), l.MaxData))
	}
	segs := 0
	for i, d := range u.Data {
		if d == nil {
			return invalid(fmt.Sprintf("user.data[%d]", i), "required")
		}
		if len(d.Id) > l.MaxString {
			return invalid(fmt.Sprintf("user.data[%d].id", i), tooLong(len(d.Id), l.MaxString))
		}
		if len(d.Name) > l.MaxString {
			return invalid(fmt.Sprintf("user.data[%d].name", i), tooLong(len(d.Name), l.MaxString))
		}
		segs += len(d.Segment)
		if segs > l.MaxSegments {
			return invalid(fmt.Sprintf("user.data[%d].segment", i), fmt.Sprintf("more than %d segments in user.data", l.MaxSegments))
		}
		for j, s := range d.Segment {
			if s == nil {
				return invalid(fmt.Sprintf("user.data[%d].segment[%d]", i, j), "required")
			}
			for _, f := range [...]struct{ field, v string }{{"id", s.Id}, {"name", s.Name}, {"value", s.Value}} {
				if len(f.v) > l.MaxString {
					return invalid(fmt.Sprintf("user.data[%d].segment[%d].%s", i, j, f.field), tooLong(len(f.v), l.MaxString))
				}
			}
		}
	}
	return nil
}

func invalid(path, msg string) error { return &ValidationError{Path: path, Msg: msg} }

// checkLen and checkList take the path in two parts, joined only on
// failure, so that checking a valid request does not allocate.
func checkLen(prefix, field, s string, max int) error {
	if len(s) > max {
		return invalid(prefix+field, tooLong(len(s), max))
	}
	return nil
}

func checkList(prefix, field string, list []string, maxN, maxLen int) error {
	if len(list) > maxN {
		return invalid(prefix+field, fmt.Sprintf("%d entries exceeds the limit of %d", len(list), maxN))
	}
	for i, s := range list {
		if s == "" {
			return invalid(fmt.Sprintf("%s%s[%d]", prefix, field, i), "must not be empty")
		}
		if len(s) > maxLen {
			return invalid(fmt.Sprintf("%s%s[%d]", prefix, field, i), tooLong(len(s), maxLen))
		}
	}
	return nil
}

func tooLong(n, max int) string { return fmt.Sprintf("%d bytes exceeds the limit of %d", n, max) }

// dimension describes what is wrong with a width or height, or "".
func dimension(v, max int32) string {
	switch {
	case v <= 0:
		return "must be > 0"
	case v > max:
		return fmt.Sprintf("%d exceeds the limit of %d", v, max)
	}
	return ""
}

func isCurrency(s string) bool {
	return len(s) == 3 && isUpper(s[0]) && isUpper(s[1]) && isUpper(s[2])
}

func isUpper(c byte) bool { return 'A' <= c && c <= 'Z' }
