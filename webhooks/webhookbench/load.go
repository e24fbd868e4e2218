package webhookbench

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"
)

// Delivery is one signed GitHub delivery to send again and again, each time under a new
// X-GitHub-Delivery so that no receiver takes it for a duplicate.
type Delivery struct {
	Event       string // X-GitHub-Event
	ContentType string // application/json or application/x-www-form-urlencoded
	Body        []byte
	Signature   string // X-Hub-Signature-256 of Body
}

// NewDelivery signs body with secret.
func NewDelivery(event, contentType string, body, secret []byte) Delivery {
	return Delivery{Event: event, ContentType: contentType, Body: body, Signature: Sign(secret, body)}
}

// Sign is the X-Hub-Signature-256 of body: sha256=<hex HMAC-SHA256(secret, body)>.
func Sign(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// Result is what one Run measured. Latency is from sending a request to having read the whole
// answer, of the answered deliveries (2xx) only.
type Result struct {
	Requests   int           // deliveries answered 2xx
	Errors     int           // deliveries that failed or got another status
	Elapsed    time.Duration // the run's wall time
	Throughput float64       // Requests per second of Elapsed
	P50, P99   time.Duration
	Max        time.Duration
}

func (r Result) String() string {
	return fmt.Sprintf("%d deliveries in %s: %.0f/s, p50 %s, p99 %s, max %s, %d errors",
		r.Requests, r.Elapsed.Round(time.Millisecond), r.Throughput, r.P50, r.P99, r.Max, r.Errors)
}

// Run posts deliveries to url from senders goroutines, each sending one delivery after the other
// (keeping its connection open) through deliveries in turn, for duration or until ctx is done.
// Each request carries a fresh X-GitHub-Delivery. Run returns an error only for bad arguments; a
// failing request counts in Result.Errors.
func Run(ctx context.Context, url string, senders int, deliveries []Delivery, duration time.Duration) (Result, error) {
	return run(ctx, url, senders, deliveries, duration, 0)
}

// Paced is Run at an offered load of rate deliveries per second in all, spread evenly over the
// senders: each sends on its own schedule, and a delivery's latency counts from the moment it was
// due, not from when a late sender got to it, so a slow receiver is not flattered by the senders
// waiting for it (coordinated omission). Latency under a given load, where Run measures the most a
// receiver answers.
func Paced(ctx context.Context, url string, senders int, deliveries []Delivery, duration time.Duration, rate float64) (Result, error) {
	if rate <= 0 {
		return Result{}, fmt.Errorf("webhookbench: rate %v: want a positive rate", rate)
	}
	return run(ctx, url, senders, deliveries, duration, rate)
}

func run(ctx context.Context, url string, senders int, deliveries []Delivery, duration time.Duration, rate float64) (Result, error) {
	switch {
	case senders < 1:
		return Result{}, fmt.Errorf("webhookbench: %d senders: want at least 1", senders)
	case len(deliveries) == 0:
		return Result{}, errors.New("webhookbench: no deliveries to send")
	case duration <= 0:
		return Result{}, fmt.Errorf("webhookbench: duration %s: want a positive duration", duration)
	}
	runID := make([]byte, 6)
	rand.Read(runID)
	transport := &http.Transport{
		MaxIdleConns:        senders,
		MaxIdleConnsPerHost: senders,
		MaxConnsPerHost:     senders,
		DisableCompression:  true,
	}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport, Timeout: 30 * time.Second}

	ctx, cancel := context.WithTimeout(ctx, duration)
	defer cancel()
	type tally struct {
		latencies []time.Duration
		errors    int
	}
	tallies := make([]tally, senders)
	start := time.Now()
	var wg sync.WaitGroup
	for s := range senders {
		wg.Go(func() {
			t := &tallies[s]
			var interval time.Duration
			if rate > 0 {
				interval = time.Duration(float64(senders) / rate * float64(time.Second))
			}
			// The senders' schedules are staggered over one interval.
			due := start.Add(interval * time.Duration(s) / time.Duration(senders))
			for n := 0; ctx.Err() == nil; n++ {
				d := deliveries[(s+n)%len(deliveries)]
				if interval > 0 {
					if wait := time.Until(due); wait > 0 {
						select {
						case <-time.After(wait):
						case <-ctx.Done():
							return
						}
					}
				}
				sent := time.Now()
				lat, err := send(ctx, client, url, d, fmt.Sprintf("%x-%d-%d", runID, s, n))
				if interval > 0 {
					lat += sent.Sub(due) // late: the wait counts
					due = due.Add(interval)
				}
				switch {
				case ctx.Err() != nil: // cut short by the end of the run: not counted
				case err != nil:
					t.errors++
				default:
					t.latencies = append(t.latencies, lat)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)

	var res Result
	var all []time.Duration
	for _, t := range tallies {
		all = append(all, t.latencies...)
		res.Errors += t.errors
	}
	slices.Sort(all)
	res.Requests, res.Elapsed = len(all), elapsed
	res.Throughput = float64(len(all)) / elapsed.Seconds()
	if len(all) > 0 {
		res.P50, res.P99, res.Max = percentile(all, 50), percentile(all, 99), all[len(all)-1]
	}
	return res, nil
}

// percentile is the nearest-rank percentile p of sorted.
func percentile(sorted []time.Duration, p int) time.Duration {
	i := (len(sorted)*p + 99) / 100 // ceil(len*p/100), a rank from 1
	return sorted[max(i, 1)-1]
}

// send posts one delivery and reads the whole answer.
func send(ctx context.Context, client *http.Client, url string, d Delivery, id string) (time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(d.Body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", d.ContentType)
	req.Header.Set("User-Agent", "GitHub-Hookshot/webhookbench")
	req.Header.Set("X-GitHub-Event", d.Event)
	req.Header.Set("X-GitHub-Delivery", id)
	req.Header.Set("X-Hub-Signature-256", d.Signature)
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	lat := time.Since(start)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode/100 != 2 {
		return 0, fmt.Errorf("delivery %s: status %s", id, resp.Status)
	}
	return lat, nil
}
