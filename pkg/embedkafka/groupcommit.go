package embedkafka

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The group committer makes acknowledged writes durable without fsyncing in
// kfake's cluster goroutine. kfake runs without SyncWrites: its loop only
// write(2)s each produced batch to the partition's active segment (.dat)
// and index (.idx) files under <DataDir>/partitions/<topic>-<partition>/
// (and group commits to groups.log, producer ids to pids.log). The broker's
// connection wrapper (conn.go) holds back each response that acknowledges
// such a write and asks the committer for a round; a round fdatasyncs every
// file dirtied by the responses registered before it started, so one round
// covers every batch that arrived while the previous round ran, across
// partitions and topics (group commit, as PostgreSQL's WAL flush and Kafka's
// log flusher do). The held responses are released when their round ends.

// syncParallelism bounds the fsyncs of one round that run at once (all of
// a round's files are synced concurrently: on ext4 concurrent fsyncs share
// journal commits), planParallelism the partitions listed at once.
const (
	syncParallelism = 32
	planParallelism = 4
)

// work is what one held response owes the disk.
type work struct {
	parts   []string // partition directory names under partitions/
	batches int      // produced partition batches (for metrics)
	groups  bool     // groups.log (offset commits)
	pids    bool     // pids.log (producer ids, transactions)
	meta    bool     // directory entries of topics.json and partition directories
	all     bool     // every partition (a write whose partitions are unknown)
}

func (w *work) empty() bool {
	return len(w.parts) == 0 && !w.groups && !w.pids && !w.meta && !w.all
}

// round is one group fsync. It collects work while it waits to start and is
// immutable once the loop took it.
type round struct {
	seq     uint64
	done    chan struct{}
	err     error // set before done is closed
	parts   map[string]struct{}
	groups  bool
	pids    bool
	meta    bool
	all     bool
	waiters int
	batches int
	startEv uint64 // test event sequence numbers
	endEv   uint64
}

// fsyncError is a failed fsync: the kernel may have dropped the dirty pages,
// so no later fsync can prove the data is on disk.
type fsyncError struct {
	path string
	err  error
}

func (e *fsyncError) Error() string { return fmt.Sprintf("fsync %s: %v", e.path, e.err) }
func (e *fsyncError) Unwrap() error { return e.err }

var errCommitterStopped = errors.New("embedded broker stopping")

// committer runs group fsync rounds for one broker data directory.
type committer struct {
	dir string
	log *slog.Logger
	met *metrics
	t   *testHooks // nil outside tests

	mu      sync.Mutex
	next    *round // collecting; taken by the loop when it starts a round
	seq     uint64
	failed  error // sticky: set by the first failed fsync
	stopped bool

	failedCh chan struct{} // closed when failed is set
	kick     chan struct{}
	quit     chan struct{}
	exited   chan struct{}

	idMu sync.RWMutex
	ids  map[[16]byte]string // topic id -> name, learned from responses

	// Owned by the loop goroutine (and its workers, one per partition).
	parts            map[string]*partFiles
	groupsLog        logFile
	pidsLog          logFile
	knownPartitions  bool // the partitions directory has been synced once
	filesInRound     []syncedFile
	filesInRoundLock sync.Mutex
}

// syncedFile is a file a round synced, with its size just before the sync
// (tests check that every byte of the log was covered by a finished round).
type syncedFile struct {
	path string
	size int64
}

// partFiles are the committer's own descriptors for one partition: its
// directory and its newest segment and index files, kept open across rounds.
type partFiles struct {
	dir  *os.File
	base int64 // base offset of seg and idx
	seg  *os.File
	idx  *os.File
}

func (p *partFiles) closeFiles() {
	if p.seg != nil {
		p.seg.Close()
		p.seg = nil
	}
	if p.idx != nil {
		p.idx.Close()
		p.idx = nil
	}
}

func (p *partFiles) close() {
	p.closeFiles()
	if p.dir != nil {
		p.dir.Close()
		p.dir = nil
	}
}

type logFile struct{ f *os.File }

func newCommitter(dir string, log *slog.Logger, met *metrics, t *testHooks) *committer {
	c := &committer{
		dir:      dir,
		log:      log,
		met:      met,
		t:        t,
		failedCh: make(chan struct{}),
		kick:     make(chan struct{}, 1),
		quit:     make(chan struct{}),
		exited:   make(chan struct{}),
		ids:      make(map[[16]byte]string),
		parts:    make(map[string]*partFiles),
	}
	go c.loop()
	return c
}

// enqueue registers w with the next round to start and returns that round.
// The round starts after enqueue returns, so it covers every write that
// completed before the call.
func (c *committer) enqueue(w *work) *round {
	c.mu.Lock()
	if err := c.failed; err != nil || c.stopped {
		c.mu.Unlock()
		if err == nil {
			err = errCommitterStopped
		}
		r := &round{done: make(chan struct{}), err: err}
		close(r.done)
		return r
	}
	r := c.next
	if r == nil {
		r = &round{done: make(chan struct{}), parts: make(map[string]struct{})}
		c.next = r
	}
	for _, p := range w.parts {
		r.parts[p] = struct{}{}
	}
	r.groups = r.groups || w.groups
	r.pids = r.pids || w.pids
	r.meta = r.meta || w.meta
	r.all = r.all || w.all
	r.waiters++
	r.batches += w.batches
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
	return r
}

// take removes the collecting round, if any, so the loop can run it.
func (c *committer) take() *round {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.next
	c.next = nil
	if r != nil {
		c.seq++
		r.seq = c.seq
	}
	return r
}

func (c *committer) loop() {
	defer close(c.exited)
	for {
		select {
		case <-c.kick:
		case <-c.quit:
			// stop set stopped first: no round can be added after this one.
			if r := c.take(); r != nil {
				c.run(r)
			}
			return
		}
		for r := c.take(); r != nil; r = c.take() {
			c.run(r)
		}
	}
}

func (c *committer) run(r *round) {
	start := time.Now()
	if c.t != nil {
		r.startEv = c.t.event()
		c.filesInRound = c.filesInRound[:0]
	}
	c.mu.Lock()
	err := c.failed
	c.mu.Unlock()
	if err == nil {
		err = c.syncRound(r)
	}
	var fe *fsyncError
	if errors.As(err, &fe) {
		c.mu.Lock()
		if c.failed == nil {
			c.failed = err
			close(c.failedCh)
			c.log.Error("embedded broker: fsync failed; no more writes will be acknowledged until the broker restarts and reloads its log from disk", "err", err)
		}
		c.mu.Unlock()
	} else if err != nil {
		c.log.Warn("embedded broker: sync round failed; the writes it covered are not acknowledged", "err", err)
	}
	r.err = err
	c.met.observeRound(time.Since(start), r.waiters, r.batches, err != nil)
	if c.t != nil {
		r.endEv = c.t.event()
		c.t.roundDone(roundEvent{
			Seq: r.seq, StartEv: r.startEv, EndEv: r.endEv, Err: err,
			Waiters: r.waiters, Batches: r.batches, Files: slices.Clone(c.filesInRound),
		})
	}
	close(r.done)
}

// stop runs the rounds still queued, then syncs every file and directory of
// the data directory (kfake without SyncWrites does not sync what it writes
// at shutdown) and closes the committer's descriptors.
func (c *committer) stop() error {
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		<-c.exited
		return nil
	}
	c.stopped = true
	c.mu.Unlock()
	close(c.quit)
	<-c.exited
	for _, p := range c.parts {
		p.close()
	}
	for _, l := range []*logFile{&c.groupsLog, &c.pidsLog} {
		if l.f != nil {
			l.f.Close()
			l.f = nil
		}
	}
	c.mu.Lock()
	failed := c.failed
	c.mu.Unlock()
	if failed != nil {
		return failed
	}
	return c.syncTree()
}

// failure is closed once an fsync failed.
func (c *committer) failure() <-chan struct{} { return c.failedCh }

func (c *committer) err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.failed
}

func (c *committer) setTopicID(id [16]byte, name string) {
	if id == ([16]byte{}) || name == "" {
		return
	}
	c.idMu.RLock()
	known := c.ids[id] == name
	c.idMu.RUnlock()
	if known {
		return
	}
	c.idMu.Lock()
	c.ids[id] = name
	c.idMu.Unlock()
}

func (c *committer) topicName(id [16]byte) (string, bool) {
	c.idMu.RLock()
	defer c.idMu.RUnlock()
	n, ok := c.ids[id]
	return n, ok
}

// partDirName is kfake's directory name of a partition (persist.go partDir).
func partDirName(topic string, part int32) string {
	return url.PathEscape(topic) + "-" + strconv.Itoa(int(part))
}

func (c *committer) partitionsDir() string { return filepath.Join(c.dir, "partitions") }

// syncPlan is what one round fdatasyncs. Planning (listing partition
// directories, reopening rolled or replaced files) is cheap; the fsyncs
// then all run at once.
type syncPlan struct {
	mu         sync.Mutex
	files      []*os.File // to fdatasync
	closeAfter []*os.File // opened or retired for this round only
	newDirs    bool       // a partition directory was seen for the first time
}

func (p *syncPlan) add(f *os.File, closeAfter bool) {
	p.mu.Lock()
	p.files = append(p.files, f)
	if closeAfter {
		p.closeAfter = append(p.closeAfter, f)
	}
	p.mu.Unlock()
}

// syncRound syncs everything r covers.
func (c *committer) syncRound(r *round) error {
	parts := r.parts
	if r.all {
		names, err := readDirNames(c.partitionsDir())
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		parts = make(map[string]struct{}, len(names)+len(r.parts))
		for p := range r.parts {
			parts[p] = struct{}{}
		}
		for _, n := range names {
			parts[n] = struct{}{}
		}
	}
	plan := &syncPlan{}
	defer func() {
		for _, f := range plan.closeAfter {
			f.Close()
		}
	}()
	var tasks []func() error
	for name := range parts {
		pf := c.parts[name]
		if pf == nil {
			pf = &partFiles{}
			c.parts[name] = pf
		}
		tasks = append(tasks, func() error { return c.planPartition(plan, name, pf, true) })
	}
	if r.groups {
		tasks = append(tasks, func() error { return c.planLog(plan, &c.groupsLog, "groups.log") })
	}
	if r.pids {
		tasks = append(tasks, func() error { return c.planLog(plan, &c.pidsLog, "pids.log") })
	}
	if err := runTasks(tasks, planParallelism); err != nil {
		// Planning may have retired a rolled segment that will not be
		// synced now: forget these partitions' files, so the next round
		// syncs every segment of them.
		for name := range parts {
			c.parts[name].close()
		}
		return err
	}
	if r.meta || plan.newDirs || r.all || !c.knownPartitions && len(parts) > 0 {
		// New partition directories, topics.json renamed, topics deleted:
		// the directory entries must reach the disk too.
		for _, d := range []string{c.partitionsDir(), c.dir} {
			f, err := os.Open(d)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return err
			}
			plan.add(f, true)
		}
		c.knownPartitions = true
	}
	tasks = tasks[:0]
	for _, f := range plan.files {
		tasks = append(tasks, func() error { return c.syncFile(f) })
	}
	return runTasks(tasks, syncParallelism)
}

// runTasks runs tasks, at most parallelism at once, and returns the first
// error, preferring an fsync error.
func runTasks(tasks []func() error, parallelism int) error {
	if len(tasks) == 1 {
		return tasks[0]()
	}
	var (
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
		next  atomic.Int64
	)
	for range min(len(tasks), parallelism) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(tasks) {
					return
				}
				err := tasks[i]()
				var fe *fsyncError
				mu.Lock()
				if err != nil && (first == nil || errors.As(err, &fe)) {
					first = err
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return first
}

// planPartition adds to plan the files of one partition that may hold
// writes not yet synced: the newest segment and index and, if the segment
// rolled since the last round, every segment from the previously newest on
// (kfake without SyncWrites does not sync a segment when it rolls it), plus
// the directory when it has new entries. The first time it sees a
// partition, or if its files were replaced (topic recreated, segments
// rewritten by compaction), it syncs every segment.
func (c *committer) planPartition(plan *syncPlan, name string, p *partFiles, retry bool) error {
	pdir := filepath.Join(c.partitionsDir(), name)
	fresh := false
	if p.dir == nil {
		d, err := os.Open(pdir)
		if errors.Is(err, fs.ErrNotExist) {
			return nil // nothing written (e.g. the produce failed)
		}
		if err != nil {
			return err
		}
		p.dir = d
		fresh = true
	}
	if _, err := p.dir.Seek(0, io.SeekStart); err != nil {
		return err
	}
	names, err := p.dir.Readdirnames(-1)
	if err != nil {
		return err
	}
	var bases []int64
	for _, n := range names {
		if b, ok := strings.CutSuffix(n, ".dat"); ok {
			if off, err := strconv.ParseInt(b, 10, 64); err == nil {
				bases = append(bases, off)
			}
		}
	}
	if len(bases) == 0 {
		if !fresh && retry {
			// The directory we hold was removed (topic deleted); a topic
			// of the same name may have a new one.
			p.close()
			return c.planPartition(plan, name, p, false)
		}
		return nil
	}
	if fresh {
		plan.mu.Lock()
		plan.newDirs = true
		plan.mu.Unlock()
	}
	slices.Sort(bases)
	newest := bases[len(bases)-1]
	if p.seg != nil && (unlinked(p.seg) || unlinked(p.idx)) {
		p.closeFiles() // rewritten under the same name: resync everything
	}
	everything := p.seg == nil
	if everything || newest != p.base {
		plan.add(p.dir, false)
	}
	for _, b := range bases {
		if !everything && b < p.base {
			continue
		}
		if p.seg != nil && b == p.base {
			plan.add(p.seg, false)
			plan.add(p.idx, false)
			continue
		}
		seg, idx, err := openSegment(pdir, b)
		if errors.Is(err, fs.ErrNotExist) {
			// Being created by a roll right now: it holds no write that was
			// acknowledged before this round started.
			continue
		}
		if err != nil {
			return err
		}
		keep := b == newest
		plan.add(seg, !keep)
		plan.add(idx, !keep)
		if keep {
			if p.seg != nil {
				// The segment rolled: the old one is synced this round,
				// then closed.
				plan.mu.Lock()
				plan.closeAfter = append(plan.closeAfter, p.seg, p.idx)
				plan.mu.Unlock()
			}
			p.seg, p.idx, p.base = seg, idx, b
		}
	}
	return nil
}

func openSegment(pdir string, base int64) (seg, idx *os.File, err error) {
	seg, err = os.Open(filepath.Join(pdir, strconv.FormatInt(base, 10)+".dat"))
	if err != nil {
		return nil, nil, err
	}
	idx, err = os.Open(filepath.Join(pdir, strconv.FormatInt(base, 10)+".idx"))
	if err != nil {
		seg.Close()
		return nil, nil, err
	}
	return seg, idx, nil
}

// planLog adds groups.log or pids.log to plan, reopening it when kfake
// replaced it (compaction writes a new file and renames it over the old).
func (c *committer) planLog(plan *syncPlan, l *logFile, name string) error {
	if l.f != nil && unlinked(l.f) {
		l.f.Close()
		l.f = nil
	}
	if l.f == nil {
		f, err := os.Open(filepath.Join(c.dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		l.f = f
		plan.mu.Lock()
		plan.newDirs = true // the data directory's entry for it
		plan.mu.Unlock()
	}
	plan.add(l.f, false)
	return nil
}

// syncFile fdatasyncs f; an error is an *fsyncError.
func (c *committer) syncFile(f *os.File) error {
	if c.t != nil {
		var size int64
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			size = fi.Size()
		} else {
			size = -1
		}
		c.filesInRoundLock.Lock()
		c.filesInRound = append(c.filesInRound, syncedFile{path: f.Name(), size: size})
		c.filesInRoundLock.Unlock()
		if c.t.syncErr != nil {
			if err := c.t.syncErr(f.Name()); err != nil {
				return &fsyncError{path: f.Name(), err: err}
			}
		}
	}
	c.met.files.Add(1)
	if err := fdatasync(f); err != nil {
		return &fsyncError{path: f.Name(), err: err}
	}
	return nil
}

// syncTree syncs every regular file and directory under the data directory.
func (c *committer) syncTree() error {
	var first error
	err := filepath.WalkDir(c.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if !d.IsDir() && !d.Type().IsRegular() {
			return nil
		}
		f, err := os.Open(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := fdatasync(f); err != nil && first == nil {
			first = &fsyncError{path: path, err: err}
		}
		f.Close()
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		err = nil
	}
	if first != nil {
		return first
	}
	return err
}

func readDirNames(path string) ([]string, error) {
	d, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.Readdirnames(-1)
}
