package world

import "slices"

// The vocabulary of the generated world. Facet values are listed in
// popularity order: the first value of a facet is drawn most often (Zipf),
// so individual contributors outnumber chief officers, as they do.

type (
	titleInfo    struct{ value, seniority, audience string }
	painInfo     struct{ value, benefit string }
	industryInfo struct{ value, label string }
)

// titles are the title facet's values with the seniority each implies and
// the audience phrase creatives address them with.
var titles = []titleInfo{
	{"marketing-specialist", "individual-contributor", "marketing specialists"},
	{"marketing-coordinator", "individual-contributor", "marketing coordinators"},
	{"data-analyst", "individual-contributor", "data analysts"},
	{"content-manager", "manager", "content teams"},
	{"product-manager", "manager", "product managers"},
	{"demand-gen-manager", "manager", "demand gen teams"},
	{"revops-manager", "manager", "RevOps leaders"},
	{"procurement-manager", "manager", "procurement teams"},
	{"controller", "manager", "controllers"},
	{"marketing-director", "director", "marketing directors"},
	{"sales-director", "director", "sales leaders"},
	{"it-director", "director", "IT directors"},
	{"hr-director", "director", "HR leaders"},
	{"vp-marketing", "vp", "marketing VPs"},
	{"vp-sales", "vp", "sales VPs"},
	{"cmo", "c-level", "CMOs"},
	{"cfo", "c-level", "CFOs"},
	{"cto", "c-level", "CTOs"},
	{"cio", "c-level", "CIOs"},
	{"ceo", "c-level", "CEOs"},
	{"founder", "c-level", "founders"},
}

// seniorities in popularity order. Seniority follows from the title; a
// share of individual contributors are interns.
var seniorities = []string{"individual-contributor", "manager", "director", "vp", "c-level", "intern"}

// senioritiesOf returns the seniorities a user with title t can have, as
// GenerateSegments draws them: the one the title implies, and intern for
// an individual contributor.
func senioritiesOf(t string) []string {
	s := titles[slices.IndexFunc(titles, func(i titleInfo) bool { return i.value == t })].seniority
	if s == "individual-contributor" {
		return []string{s, "intern"}
	}
	return []string{s}
}

// painPoints, with the benefit a creative promises for each.
var painPoints = []painInfo{
	{"lead-quality", "pass sales only the leads that close"},
	{"pipeline-velocity", "move deals through the pipeline faster"},
	{"attribution", "know which channel earned every deal"},
	{"budget-visibility", "see where every dollar of budget goes"},
	{"data-silos", "bring every team's data into one view"},
	{"cost-control", "cut tool spend without cutting results"},
	{"churn", "spot at-risk accounts before they leave"},
	{"reporting-overhead", "replace weekly spreadsheets with live dashboards"},
	{"security", "keep customer data locked down"},
	{"compliance", "pass your next audit without the scramble"},
	{"hiring", "hire the right people in half the time"},
	{"onboarding", "get new customers live in days, not months"},
	{"forecasting", "forecast revenue you can stand behind"},
	{"vendor-sprawl", "retire the tools nobody uses"},
	{"personalization", "speak to every buyer in their own terms"},
}

// industries, with the phrase creatives use for their teams.
var industries = []industryInfo{
	{"saas", "SaaS"},
	{"fintech", "fintech"},
	{"healthcare", "healthcare"},
	{"manufacturing", "manufacturing"},
	{"retail", "retail"},
	{"professional-services", "professional services"},
	{"education", "education"},
	{"logistics", "logistics"},
	{"insurance", "insurance"},
	{"banking", "banking"},
	{"media", "media"},
	{"telecom", "telecom"},
	{"energy", "energy"},
	{"real-estate", "real estate"},
	{"government", "public sector"},
	{"biotech", "biotech"},
	{"hospitality", "hospitality"},
	{"automotive", "automotive"},
	{"nonprofit", "nonprofit"},
	{"cybersecurity", "cybersecurity"},
}

var companySizes = []string{"11-50", "51-200", "1-10", "201-1000", "1001-5000", "5000-plus"}

var regions = []string{
	"na-east", "na-west", "emea-uk", "emea-dach", "na-central", "emea-france",
	"apac-anz", "emea-nordics", "latam-brazil", "apac-india", "apac-japan", "emea-benelux",
}

// The facets, by name.
const (
	FacetTitle       = "title"
	FacetSeniority   = "seniority"
	FacetPainPoint   = "pain_point"
	FacetIndustry    = "industry"
	FacetCompanySize = "company_size"
	FacetRegion      = "region"
	// FacetSubIndustry exists only when Config.SegmentsTarget asks for more
	// segments than the natural facets hold: numbered sub-industries such as
	// fintech-07, each user in one of their industry's.
	FacetSubIndustry = "sub_industry"
)

// advertisers are the world's B2B advertisers: name (an id prefix), display
// name, landing domain, product, IAB category, and the facet values their
// campaigns lean to.
var advertisers = []struct {
	id, name, domain, product, cat string
}{
	{"acme", "Acme", "acme.com", "Acme Spend", "IAB3"},
	{"globex", "Globex", "globex.com", "Globex CRM", "IAB19"},
	{"initech", "Initech", "initech.com", "Initech Analytics", "IAB19"},
	{"hooli", "Hooli", "hooli.com", "Hooli Cloud", "IAB19"},
	{"umbrella", "Umbrella", "umbrellacorp.com", "Umbrella Health Cloud", "IAB7"},
	{"stark", "Stark", "starkindustries.com", "Stark Ops", "IAB19"},
	{"wayne", "Wayne", "wayne-enterprises.com", "Wayne Treasury", "IAB13"},
	{"wonka", "Wonka", "wonka.com", "Wonka Commerce", "IAB3"},
	{"soylent", "Soylent", "soylent.com", "Soylent People", "IAB4"},
	{"cyberdyne", "Cyberdyne", "cyberdyne.com", "Cyberdyne Shield", "IAB19"},
	{"tyrell", "Tyrell", "tyrell.com", "Tyrell Data", "IAB19"},
	{"vandelay", "Vandelay", "vandelay.com", "Vandelay Supply", "IAB3"},
	{"oscorp", "Oscorp", "oscorp.com", "Oscorp Labs", "IAB7"},
	{"pied-piper", "Pied Piper", "piedpiper.com", "Pied Piper Storage", "IAB19"},
	{"dunder", "Dunder Mifflin", "dundermifflin.com", "Dunder Procure", "IAB3"},
	{"massive", "Massive Dynamic", "massivedynamic.com", "Massive Forecast", "IAB3"},
	{"aperture", "Aperture", "aperturescience.com", "Aperture Learn", "IAB5"},
	{"blueshift", "Blueshift", "blueshift.io", "Blueshift Journeys", "IAB3"},
	{"ledgerly", "Ledgerly", "ledgerly.io", "Ledgerly Close", "IAB13"},
	{"northwind", "Northwind", "northwind.com", "Northwind Logistics", "IAB3"},
	{"contoso", "Contoso", "contoso.com", "Contoso Identity", "IAB19"},
	{"fabrikam", "Fabrikam", "fabrikam.com", "Fabrikam MES", "IAB19"},
	{"tailspin", "Tailspin", "tailspin.io", "Tailspin Hiring", "IAB4"},
	{"woodgrove", "Woodgrove", "woodgrove.com", "Woodgrove Payments", "IAB13"},
	{"litware", "Litware", "litware.io", "Litware Attribution", "IAB3"},
	{"adatum", "Adatum", "adatum.com", "Adatum Compliance", "IAB3"},
	{"proseware", "Proseware", "proseware.com", "Proseware Content", "IAB3"},
	{"wingtip", "Wingtip", "wingtiptoys.com", "Wingtip Retail Ops", "IAB3"},
	{"lucerne", "Lucerne", "lucernepublishing.com", "Lucerne Insights", "IAB3"},
	{"margie", "Margie's", "margiestravel.com", "Margie's Events", "IAB20"},
}

// Categories a campaign may add to its advertiser's own.
var extraCats = []string{"IAB19-18", "IAB3-4", "IAB13-7", "IAB19-30", "IAB3-11"}

// The channels creatives are written for.
var channels = []string{"social", "web", "email", "mobile", "video"}

// sizes are the creative sizes, with the channels each suits (long-form
// sizes for web and email, short ones for social and mobile).
var sizes = []struct {
	w, h     int32
	channels []string
}{
	{300, 250, []string{"web", "social", "mobile", "video"}},
	{728, 90, []string{"web", "email"}},
	{320, 50, []string{"mobile", "social"}},
	{160, 600, []string{"web"}},
	{1200, 627, []string{"social", "email", "web"}},
}

// ctas are the calls to action creatives end with.
var ctas = []string{"Book a demo", "Start free trial", "Get the guide", "See pricing", "Talk to sales", "Watch the 2-minute tour"}
