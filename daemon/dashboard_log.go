package daemon

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// logTailBytes bounds the command output the dashboard shows: the last 256 KiB of the run log.
const logTailBytes = 256 << 10

// ansiEscape matches terminal escape sequences (colours, cursor moves) that nix and ssh may write.
var ansiEscape = regexp.MustCompile("\x1b\\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\\\-_]")

// log answers GET /runs/{id}/log: the tail of the run's command output as plain text (the last
// logTailBytes, cut at a line, terminal escapes removed, valid UTF-8). The file is the one logFile
// names for the validated id, and only a regular file: never a path outside the logs directory.
func (p pages) log(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !runID.MatchString(id) || p.logFile == nil {
		http.Error(w, "no such run output", http.StatusNotFound)
		return
	}
	tail, err := readLogTail(p.logFile(id), logTailBytes)
	if err != nil {
		if isNotExist(err) {
			http.Error(w, "no command output recorded for this run", http.StatusNotFound)
			return
		}
		if errors.Is(err, errNotRegular) {
			p.logger.Warn("run log: not served", "run_id", id, "err", err)
			http.Error(w, "no command output recorded for this run", http.StatusNotFound)
			return
		}
		p.logger.Warn("run log", "run_id", id, "err", err)
		http.Error(w, "the run's command output could not be read", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	secureHeaders(w.Header())
	_, _ = io.WriteString(w, tail)
}

// errNotRegular is the error of a log path that is not a regular file (a link, a directory).
var errNotRegular = errors.New("not a regular file")

func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }

// readLogTail reads at most limit bytes from the end of the file at path, starting after the first
// line break when it had to cut, with a first line saying how much it left out.
func readLogTail(path string, limit int64) (string, error) {
	path = filepath.Clean(path)
	info, err := os.Lstat(path)
	if err != nil {
		return "", fmt.Errorf("run log %s: %w", filepath.Base(path), err)
	}
	if !info.Mode().IsRegular() {
		return "", fmt.Errorf("run log %s: %w", filepath.Base(path), errNotRegular)
	}
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("run log %s: %w", filepath.Base(path), err)
	}
	defer f.Close()
	size := info.Size()
	start := max(size-limit, 0)
	buf, err := io.ReadAll(io.NewSectionReader(f, start, limit))
	if err != nil {
		return "", fmt.Errorf("run log %s: read: %w", filepath.Base(path), err)
	}
	cut := start
	if start > 0 {
		if i := strings.IndexByte(string(buf), '\n'); i >= 0 && i < len(buf)-1 {
			buf = buf[i+1:]
			cut += int64(i + 1)
		}
	}
	text := strings.ToValidUTF8(ansiEscape.ReplaceAllString(string(buf), ""), "\uFFFD")
	if cut > 0 {
		text = fmt.Sprintf("[%d earlier bytes not shown]\n", cut) + text
	}
	return text, nil
}
