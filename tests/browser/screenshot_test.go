package browser

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kvdstore/kvd/internal/kvtest"
)

// pageState is what the live page shows, read from its DOM.
type pageState struct {
	Mode, State, Written, Durable, Rate, LatAsync string
	Feed                                          int // lines in the change feed
}

// pageStateJS reads a pageState from kvd's live page (server/http_watch_page.html).
const pageStateJS = `(() => {
  const t = (id) => { const e = document.getElementById(id); return e ? e.textContent : "(missing)"; };
  const feed = document.getElementById("feed");
  return {Mode: t("mode"), State: t("state"), Written: t("written"), Durable: t("durable"),
    Rate: t("rate"), LatAsync: t("latasync"), Feed: feed ? feed.childElementCount : -1};
})()`

// live reports whether the page shows live data: the feed connected with
// changes in it, and the figures filled in (the commit rate and latency
// need two polls of the status a second apart).
func (s pageState) live() bool {
	return s.State == "live" && s.Feed >= 20 && s.Written != "-" && s.Durable != "-" && s.Rate != "-" && s.LatAsync != "-"
}

// TestLivePageScreenshot loads kvd's live page (/) in headless Chromium
// while writes run, waits until it shows them (the revisions, the commit
// rate and latency, the change feed), with no JavaScript error, and takes
// a screenshot: a PNG of the page's size that is not blank, kept in
// $KVD_ARTIFACTS (else the test's temporary directory) as live-page.png.
func TestLivePageScreenshot(t *testing.T) {
	chromium := needChromium(t)
	k := startKVD(t, "--commit-mode", "async")
	l := startLoad(t, k.RESPAddr, "app/", 2)
	const width, height = 1280, 900

	ctx := waitCtx(t, browserTimeout)
	extra, connect := devtoolsPipes(t)
	b := startBrowser(t, chromium, append(chromiumArgs(t.TempDir()), "--remote-debugging-pipe", "about:blank"), extra...)
	d := connect()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("%s\nchromium's output:\n%s", fmt.Sprintf(format, args...), b.Output())
	}
	s, err := d.openPage(ctx, width, height)
	if err != nil {
		fail("%v", err)
	}
	url := "http://" + k.HTTPAddr + "/"
	if err := d.navigate(ctx, s, url); err != nil {
		fail("%v", err)
	}
	var st pageState
	ok := kvtest.WaitFor(browserTimeout/2, 100*time.Millisecond, func() bool {
		if err := d.eval(ctx, s, pageStateJS, &st); err != nil {
			fail("%v", err)
		}
		return st.live()
	})
	if !ok {
		fail("the page at %s did not show live data: %+v", url, st)
	}
	shot, err := d.screenshot(ctx, s)
	if err != nil {
		fail("%v", err)
	}
	if errs := d.JSErrors(); len(errs) > 0 {
		t.Errorf("the page's JavaScript errors: %q", errs)
	}
	d.call(ctx, "", "Browser.close", nil, nil)
	b.Stop()
	if err := l.Stop(); err != nil {
		t.Fatal(err)
	}

	path := filepath.Join(artifactDir(t), "live-page.png")
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot of the live page (%d bytes): %s; the page showed %+v", len(shot), path, st)
	checkPNG(t, shot, width, height)
}

// artifactDir returns $KVD_ARTIFACTS, made if missing, or else the test's
// temporary directory.
func artifactDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("KVD_ARTIFACTS")
	if dir == "" {
		return t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("KVD_ARTIFACTS: %v", err)
	}
	return dir
}

// pageColours are colours of server/http_watch_page.html's CSS, with
// how many pixels of each a screenshot of the live page has at least:
// solid strokes of its text and frames are drawn in exactly these.
var pageColours = []struct {
	what string
	rgb  [3]uint8
	min  int
}{
	{"text (#222)", [3]uint8{0x22, 0x22, 0x22}, 500},
	{"card and feed borders (#ccc)", [3]uint8{0xcc, 0xcc, 0xcc}, 2000},
	{"the feed's put lines (#060)", [3]uint8{0x00, 0x66, 0x00}, 100},
	{"the feed's del lines (#a00)", [3]uint8{0xaa, 0x00, 0x00}, 20},
}

// checkPNG checks that b is a PNG of width×height that shows the live
// page: its text, its frames, and put and del lines in its feed (the
// load's writes include both). A blank page, an error page or the page
// without its styles or its feed has none of some of these colours.
func checkPNG(t *testing.T, b []byte, width, height int) {
	t.Helper()
	if !bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("the screenshot is not a PNG: it starts %q", b[:min(len(b), 16)])
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("decoding the screenshot: %v", err)
	}
	if got := img.Bounds().Size(); got != (image.Point{width, height}) {
		t.Fatalf("the screenshot is %v, want %dx%d", got, width, height)
	}
	count := map[[3]uint8]int{}
	for y := img.Bounds().Min.Y; y < img.Bounds().Max.Y; y++ {
		for x := img.Bounds().Min.X; x < img.Bounds().Max.X; x++ {
			c := color.NRGBAModel.Convert(img.At(x, y)).(color.NRGBA)
			count[[3]uint8{c.R, c.G, c.B}]++
		}
	}
	var found []string
	for _, c := range pageColours {
		n := count[c.rgb]
		if n < c.min {
			t.Errorf("the screenshot has %d pixels of %s, want at least %d: it does not show the live page", n, c.what, c.min)
		}
		found = append(found, fmt.Sprintf("%s %d", c.what, n))
	}
	t.Logf("pixels: %s", strings.Join(found, ", "))
}
