package audit

import (
	"embed"
	"fmt"
	"html/template"
	"io"
	"time"
)

//go:embed report.html.tmpl
var templates embed.FS

var reportTemplate = template.Must(template.New("report.html.tmpl").Funcs(template.FuncMap{
	"stamp": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05.000000 UTC") },
	"label": func(s Status) string {
		switch s {
		case Pass:
			return "bestanden / passed"
		case Indeterminate:
			return "unbestimmt / indeterminate"
		}
		return "nicht bestanden / failed"
	},
}).ParseFS(templates, "report.html.tmpl"))

// WriteHTML writes reports as one self-contained HTML page, modelled on the
// Prüfprotokoll of beA/EGVP: the overall result first, then the message,
// who signed what and when, the logs and where each evidence is in them,
// and every check in green, yellow or red. It holds no scripts and loads
// nothing, so it can be archived as it is.
func WriteHTML(w io.Writer, reports []*Report) error {
	data := struct {
		Reports []*Report
		OK      bool
		Worst   Status
		Made    time.Time
	}{Reports: reports, Worst: Worst(reports), Made: time.Now()}
	data.OK = data.Worst == Pass
	for _, r := range reports {
		data.Made = r.Verified
	}
	if err := reportTemplate.Execute(w, data); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}
