// ksr-fanotify-helper: the write-range capture's listener (src/replicator/agent/write-ranges.ts).
//
// It answers fanotify pre-content permission events itself, at once, so a writer never waits
// for Node (its event loop, its garbage collector, or a stopped agent process). It pairs each
// pre-content event (raised before a read, write, fallocate, truncate or mmap, with its range)
// with the FAN_MODIFY the same thread raises once the write has landed, and streams completed
// write ranges to the agent as text lines on stdout. While the agent holds writes for a
// crash-consistent cut it delays its answers, never beyond the hold limit it was given.
//
// stdin (from the agent), NUL-terminated commands:
//   "M<id> <directory>"  put an inode mark (children of the directory) ->  "m <id> <errno>"
//   "H<ms>"              hold new writes for at most ms; answers once writes in flight landed
//                        ->  "h <quiet 0|1> <waited us>"
//   "R"                  release held writes                 ->  "r <held us> <expired 0|1>"
//   "P"                  heartbeat                           ->  "p"
// stdout (to the agent), one record per line:
//   "w <ino> <offset> <count>"     a write to [offset, offset+count) landed (count 0: truncate)
//   "d <ino>"                      the file changed where the range is unknown: re-hash it
//   "t <ino> <offset>"             a truncate to about offset finished: everything after may differ
//   "a <pid> <maj:min> <ino> <offset> <count>"  an access not followed by a write (a read or an
//                                  mmap; the agent checks for shared writable mappings)
//   "o"                            records were lost: the agent must run a verifying scan
//   "x <held us>"                  a hold reached its limit and was released by the helper
//   "ready" | "e <what> <errno>"   start-up result
// Stdin closing (the agent died) ends the helper; the kernel then allows every pending event.
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fanotify.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

// Newer than the C library's headers on this machine's distribution.
#ifndef FAN_PRE_ACCESS
#define FAN_PRE_ACCESS 0x00100000
#endif
#ifndef FAN_CLASS_PRE_CONTENT
#define FAN_CLASS_PRE_CONTENT 0x08
#endif
#ifndef FAN_EVENT_INFO_TYPE_RANGE
#define FAN_EVENT_INFO_TYPE_RANGE 6
#endif
#ifndef FAN_REPORT_TID
#define FAN_REPORT_TID 0x00000100
#endif

struct range_info {
  struct fanotify_event_info_header hdr;
  uint32_t pad;
  uint64_t offset;
  uint64_t count;
};

static uint64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

// ---------------------------------------------------------------- output, never blocking

#define OUT_LIMIT (8u << 20)
#define LOST_SLOTS 65536u
static char *out;
static size_t out_len;
static int out_lost_mode; // records are being replaced by "d <ino>" of lost files
static uint64_t lost[LOST_SLOTS];
static unsigned lost_count;
static int lost_all;

static void lose(uint64_t ino) {
  if (lost_all) return;
  unsigned slot = (unsigned)(ino * 0x9E3779B97F4A7C15ull >> 48) % LOST_SLOTS;
  for (unsigned probe = 0; probe < LOST_SLOTS; probe++, slot = (slot + 1) % LOST_SLOTS) {
    if (lost[slot] == ino + 1) return;
    if (lost[slot] == 0) {
      if (lost_count >= LOST_SLOTS / 2) break;
      lost[slot] = ino + 1;
      lost_count++;
      return;
    }
  }
  lost_all = 1;
}

static void emit_raw(const char *line, size_t n) {
  memcpy(out + out_len, line, n);
  out_len += n;
}

// A record about one file: written out, or remembered as "re-hash this file" when the agent
// is not reading fast enough (the output is full).
static void emit_file(uint64_t ino, const char *line, int n) {
  if (!out_lost_mode && out_len + (size_t)n + 64 <= OUT_LIMIT / 2) {
    emit_raw(line, (size_t)n);
    return;
  }
  out_lost_mode = 1;
  lose(ino);
}

static void emit_control(const char *line) {
  size_t n = strlen(line);
  if (out_len + n > OUT_LIMIT) { // only when the agent reads nothing at all: it is lost anyway
    lost_all = 1;
    return;
  }
  emit_raw(line, n);
}

static void flush_lost(void) {
  if (!out_lost_mode || out_len > OUT_LIMIT / 4) return;
  char line[64];
  for (unsigned slot = 0; slot < LOST_SLOTS; slot++) {
    if (lost[slot] == 0) continue;
    if (out_len + 64 > OUT_LIMIT / 2) return;
    int n = snprintf(line, sizeof line, "d %llu\n", (unsigned long long)(lost[slot] - 1));
    emit_raw(line, (size_t)n);
    lost[slot] = 0;
    lost_count--;
  }
  if (lost_all) {
    emit_raw("o\n", 2);
    lost_all = 0;
  }
  out_lost_mode = 0;
}

static int write_out(void) {
  while (out_len > 0) {
    ssize_t n = write(STDOUT_FILENO, out, out_len);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) return 0;
      return -1;
    }
    memmove(out, out + n, out_len - (size_t)n);
    out_len -= (size_t)n;
  }
  flush_lost();
  return 0;
}

// ---------------------------------------------------------------- threads with an open access

// One per thread (FAN_REPORT_TID): a thread runs one syscall at a time, so its pre-content
// event is closed by its FAN_MODIFY (a write landed), or by its next event (it was a read, an
// mmap or a write that wrote nothing).
struct access {
  int tid; // 0: free
  int pid;
  dev_t dev;
  uint64_t ino;
  uint64_t offset, count;
  uint64_t at_us;
  int answered;
  int reported; // an "a" record was sent for it (or none is wanted: the agent's own access)
  int agent;    // a thread of the agent: never held
  int truncate; // the access is a truncate (its completion raises no event this group sees)
};

#define ACCESS_SLOTS 8192u
static struct access accesses[ACCESS_SLOTS];

static struct access *find_access(int tid, int create) {
  unsigned slot = ((unsigned)tid * 2654435761u) % ACCESS_SLOTS;
  struct access *free_slot = NULL;
  for (unsigned probe = 0; probe < 64; probe++, slot = (slot + 1) % ACCESS_SLOTS) {
    struct access *a = &accesses[slot];
    if (a->tid == tid) return a;
    if (a->tid == 0 && free_slot == NULL) free_slot = a;
  }
  if (!create) return NULL;
  if (free_slot == NULL) { // table crowded: forget the oldest neighbour, conservatively
    free_slot = &accesses[((unsigned)tid * 2654435761u) % ACCESS_SLOTS];
    char line[64];
    int n = snprintf(line, sizeof line, "d %llu\n", (unsigned long long)free_slot->ino);
    emit_file(free_slot->ino, line, n);
  }
  memset(free_slot, 0, sizeof *free_slot);
  free_slot->tid = tid;
  return free_slot;
}

// The syscall a thread is in: its number, -1 in user space, -2 running or unknown. Its arguments
// (hexadecimal, as /proc prints them) go to args when given.
static long syscall_of(int tid, unsigned long long args[6]) {
  char path[64], text[256];
  snprintf(path, sizeof path, "/proc/%d/syscall", tid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno == ENOENT || errno == ESRCH ? -1 : -2; // a thread that is gone is in no syscall
  ssize_t n = read(fd, text, sizeof text - 1);
  close(fd);
  if (n <= 0) return -2;
  text[n] = 0;
  if (strncmp(text, "running", 7) == 0) return -2;
  long nr = strtol(text, NULL, 10);
  char *cursor = strchr(text, ' ');
  for (int i = 0; args != NULL && i < 6 && cursor != NULL; i++) {
    args[i] = strtoull(cursor + 1, &cursor, 16);
    if (*cursor != ' ') break;
  }
  return nr < 0 ? -1 : nr;
}

static int is_truncate(long nr) { return nr == 76 || nr == 77; } // truncate, ftruncate

static void report_access(struct access *a) {
  if (a->reported) return;
  a->reported = 1;
  char line[128];
  if (a->truncate) { // everything from the new end on may have changed (it may grow again later)
    int n = snprintf(line, sizeof line, "t %llu %llu\n", (unsigned long long)a->ino, (unsigned long long)a->offset);
    emit_file(a->ino, line, n);
    return;
  }
  int n = snprintf(line, sizeof line, "a %d %x:%x %llu %llu %llu\n", a->pid, major(a->dev), minor(a->dev),
                   (unsigned long long)a->ino, (unsigned long long)a->offset, (unsigned long long)a->count);
  emit_file(a->ino, line, n);
}

// ---------------------------------------------------------------- holding writes

#define HELD_LIMIT 4096
static int held_fds[HELD_LIMIT];
static int held_count;
static int holding;
static uint64_t hold_started_us, hold_deadline_us;
static int fan_fd;

static void answer(int fd) {
  struct fanotify_response response = {.fd = fd, .response = FAN_ALLOW};
  while (write(fan_fd, &response, sizeof response) < 0 && errno == EINTR) {
  }
  close(fd);
}

static void release_held(void) {
  for (int i = 0; i < held_count; i++) answer(held_fds[i]);
  held_count = 0;
  holding = 0;
  for (unsigned i = 0; i < ACCESS_SLOTS; i++)
    if (accesses[i].tid != 0) accesses[i].answered = 1;
}

// Whether a thread whose access was answered before the hold may still be writing that file:
// it is inside a write-class syscall on a descriptor of that file (or we cannot tell).
static int may_be_writing(const struct access *a) {
  unsigned long long args[6] = {0};
  long nr = syscall_of(a->tid, args);
  if (nr == -2) return 1;
  if (nr < 0) return 0; // in user space, or gone
  long fd_arg;
  switch (nr) {
  case 1:   // write
  case 18:  // pwrite64
  case 20:  // writev
  case 296: // pwritev
  case 328: // pwritev2
  case 285: // fallocate
  case 77:  // ftruncate
  case 40:  // sendfile (out_fd)
    fd_arg = (long)args[0];
    break;
  case 326: // copy_file_range (fd_out)
  case 275: // splice (fd_out)
    fd_arg = (long)args[2];
    break;
  case 76:  // truncate (a path)
  case 426: // io_uring_enter
    return 1;
  default:
    return 0;
  }
  struct stat st;
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/fd/%ld", a->tid, fd_arg);
  if (stat(path, &st) < 0) return 1;
  return st.st_ino == a->ino && st.st_dev == a->dev;
}

static int writes_in_flight(void) {
  for (unsigned i = 0; i < ACCESS_SLOTS; i++) {
    const struct access *a = &accesses[i];
    if (a->tid != 0 && a->answered && a->at_us < hold_started_us && may_be_writing(a)) return 1;
  }
  return 0;
}

// ---------------------------------------------------------------- events

static pid_t agent_pid;
#define AGENT_TIDS 256
static int agent_tids[AGENT_TIDS];
static int agent_tid_count;
static uint64_t agent_tids_at_us;

// The agent's own threads (its reads of what it captures) are never held nor recorded.
static void refresh_agent_tids(void) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/task", agent_pid);
  DIR *dir = opendir(path);
  agent_tid_count = 0;
  agent_tids_at_us = now_us();
  if (dir == NULL) return;
  struct dirent *entry;
  while ((entry = readdir(dir)) != NULL && agent_tid_count < AGENT_TIDS)
    if (entry->d_name[0] != '.') agent_tids[agent_tid_count++] = atoi(entry->d_name);
  closedir(dir);
}

static int is_agent(int tid) {
  for (int i = 0; i < agent_tid_count; i++)
    if (agent_tids[i] == tid) return 1;
  if (!holding) return 0;
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/task/%d", agent_pid, tid); // a thread started since
  struct stat st;
  if (stat(path, &st) != 0) return 0;
  if (agent_tid_count < AGENT_TIDS) agent_tids[agent_tid_count++] = tid;
  return 1;
}
static int broken_hold; // a hold could not keep every writer (its queue was full, an unheld write)
// A write landed without a pre-content event (its file was opened before the mark existed, or
// another thread raised it): such writers cannot be held, so the next cut is not quiet.
static int unheld_write_seen;

static void on_pre_access(const struct fanotify_event_metadata *m, const struct stat *st, uint64_t offset,
                          uint64_t count) {
  // The agent's own threads are answered at once, even while holding: a cut reads what it
  // captures under the hold. Their writes (a test writing in the agent's process) are still
  // reported, but their reads and mmaps need no "a" record.
  int agent = is_agent(m->pid);
  struct access *a = find_access(m->pid, 1);
  if (a->ino != 0 && a->answered) report_access(a); // its previous syscall ended without a write
  int tid = a->tid;
  memset(a, 0, sizeof *a);
  a->tid = tid;
  a->dev = st->st_dev;
  a->ino = st->st_ino;
  a->offset = offset;
  a->count = count;
  a->at_us = now_us();
  a->pid = m->pid; // a thread id (FAN_REPORT_TID); /proc/<tid> is valid for threads too
  a->agent = agent;
  // A truncate looks like a small read (its range is the page at the new size); the thread is
  // still in the syscall, waiting for this answer, so /proc says which one it is.
  if (count <= 4096) a->truncate = is_truncate(syscall_of(m->pid, NULL));
  a->reported = agent && !a->truncate;
  if (agent) {
    answer(m->fd);
    a->answered = 1;
    return;
  }
  if (holding && held_count < HELD_LIMIT) {
    held_fds[held_count++] = m->fd;
    a->answered = 0;
    return;
  }
  if (holding) broken_hold = 1;
  answer(m->fd);
  a->answered = 1;
}

static void on_modify(const struct fanotify_event_metadata *m, const struct stat *st) {
  close(m->fd);
  char line[96];
  struct access *a = find_access(m->pid, 0);
  if (a != NULL && a->ino == st->st_ino && a->dev == st->st_dev) {
    if (a->agent && holding) broken_hold = 1; // the agent's own writes are never held
    int n = snprintf(line, sizeof line, "w %llu %llu %llu\n", (unsigned long long)a->ino,
                     (unsigned long long)a->offset, (unsigned long long)a->count);
    emit_file(a->ino, line, n);
    a->tid = 0;
    return;
  }
  // A write whose pre-content event came from another thread (io_uring workers, for one), or
  // none at all (a file opened before it was marked).
  unheld_write_seen = 1;
  if (holding) broken_hold = 1;
  int n = snprintf(line, sizeof line, "d %llu\n", (unsigned long long)st->st_ino);
  emit_file(st->st_ino, line, n);
}

static char event_buffer[256 * 1024] __attribute__((aligned(8)));

// Reads every queued event (batches of many) and answers each before anything else is done.
static void read_events(void) {
  for (;;) {
    ssize_t len = read(fan_fd, event_buffer, sizeof event_buffer);
    if (len <= 0) return;
    const struct fanotify_event_metadata *m = (const void *)event_buffer;
    for (; FAN_EVENT_OK(m, len); m = FAN_EVENT_NEXT(m, len)) {
      if (m->vers != FANOTIFY_METADATA_VERSION) {
        fprintf(stderr, "ksr-fanotify-helper: kernel event version %u, expected %u\n", m->vers,
                FANOTIFY_METADATA_VERSION);
        exit(3);
      }
      if (m->mask & FAN_Q_OVERFLOW) {
        lost_all = 1;
        out_lost_mode = 1;
        continue;
      }
      if (m->fd < 0) continue;
      uint64_t offset = 0, count = UINT64_MAX;
      const char *end = (const char *)m + m->event_len;
      for (const char *info = (const char *)m + m->metadata_len; info + sizeof(struct fanotify_event_info_header) <= end;) {
        const struct fanotify_event_info_header *hdr = (const void *)info;
        if (hdr->len == 0) break;
        if (hdr->info_type == FAN_EVENT_INFO_TYPE_RANGE && hdr->len >= sizeof(struct range_info)) {
          const struct range_info *range = (const void *)info;
          offset = range->offset;
          count = range->count;
        }
        info += hdr->len;
      }
      struct stat st;
      if (fstat(m->fd, &st) < 0) {
        if (m->mask & FAN_PRE_ACCESS) answer(m->fd);
        else close(m->fd);
        continue;
      }
      if (m->mask & FAN_PRE_ACCESS) on_pre_access(m, &st, offset, count);
      else if (m->mask & FAN_MODIFY) on_modify(m, &st);
      else close(m->fd);
    }
  }
}

// ---------------------------------------------------------------- commands

static char command[PATH_MAX + 64];
static size_t command_len;

static void run_command(char *text) {
  char line[96];
  switch (text[0]) {
  case 'M': {
    char *path = strchr(text, ' ');
    if (path == NULL) break;
    *path++ = 0;
    int result = fanotify_mark(fan_fd, FAN_MARK_ADD, FAN_PRE_ACCESS | FAN_MODIFY | FAN_EVENT_ON_CHILD, AT_FDCWD, path);
    snprintf(line, sizeof line, "m %s %d\n", text + 1, result == 0 ? 0 : errno);
    emit_control(line);
    break;
  }
  case 'H': {
    uint64_t limit_us = strtoull(text + 1, NULL, 10) * 1000u;
    if (holding) release_held();
    refresh_agent_tids();
    broken_hold = 0;
    holding = 1;
    hold_started_us = now_us();
    hold_deadline_us = hold_started_us + limit_us;
    // Every access answered before now either lands (its FAN_MODIFY arrives) or its thread
    // leaves the syscall; then every completed write has been read off the queue.
    int quiet = 0;
    for (;;) {
      read_events();
      if (!writes_in_flight()) {
        read_events();
        quiet = 1;
        break;
      }
      if (now_us() >= hold_deadline_us) break;
      usleep(200);
    }
    // A truncate is reported once its thread has left the syscall (it raises no event on
    // completion): those that finished before the hold are reported now, ahead of the answer,
    // so the cut reads what they zeroed.
    for (unsigned i = 0; quiet && i < ACCESS_SLOTS; i++) {
      struct access *a = &accesses[i];
      if (a->tid != 0 && a->answered && a->truncate && a->at_us < hold_started_us) report_access(a);
    }
    snprintf(line, sizeof line, "h %d %llu\n", quiet && !broken_hold && !out_lost_mode && !unheld_write_seen,
             (unsigned long long)(now_us() - hold_started_us));
    emit_control(line);
    break;
  }
  case 'R': {
    uint64_t held = holding ? now_us() - hold_started_us : 0;
    int was_holding = holding;
    release_held();
    unheld_write_seen = 0;
    snprintf(line, sizeof line, "r %llu %d\n", (unsigned long long)held, !was_holding || broken_hold);
    emit_control(line);
    break;
  }
  case 'P':
    emit_control("p\n");
    break;
  default:
    break;
  }
}

static int read_commands(void) {
  for (;;) {
    ssize_t n = read(STDIN_FILENO, command + command_len, sizeof command - 1 - command_len);
    if (n == 0) return -1;
    if (n < 0) return errno == EAGAIN || errno == EINTR ? 0 : -1;
    command_len += (size_t)n;
    char *start = command;
    char *nul;
    while ((nul = memchr(start, 0, command_len - (size_t)(start - command))) != NULL) {
      run_command(start);
      start = nul + 1;
    }
    command_len -= (size_t)(start - command);
    memmove(command, start, command_len);
    if (command_len == sizeof command - 1) command_len = 0; // an over-long command is dropped
  }
}

int main(void) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  signal(SIGPIPE, SIG_IGN);
  agent_pid = getppid();
  out = malloc(OUT_LIMIT);
  if (out == NULL) return 1;
  fan_fd = fanotify_init(FAN_CLASS_PRE_CONTENT | FAN_CLOEXEC | FAN_NONBLOCK | FAN_UNLIMITED_QUEUE | FAN_REPORT_TID,
                         O_RDONLY | O_LARGEFILE | O_CLOEXEC | O_NOATIME);
  if (fan_fd < 0)
    fan_fd = fanotify_init(FAN_CLASS_PRE_CONTENT | FAN_CLOEXEC | FAN_NONBLOCK | FAN_UNLIMITED_QUEUE | FAN_REPORT_TID,
                           O_RDONLY | O_LARGEFILE | O_CLOEXEC);
  if (fan_fd < 0) {
    printf("e init %d\n", errno);
    return 2;
  }
  fcntl(STDIN_FILENO, F_SETFL, fcntl(STDIN_FILENO, F_GETFL) | O_NONBLOCK);
  fcntl(STDOUT_FILENO, F_SETFL, fcntl(STDOUT_FILENO, F_GETFL) | O_NONBLOCK);
  refresh_agent_tids();
  emit_control("ready\n");
  for (;;) {
    struct pollfd fds[3] = {
        {.fd = fan_fd, .events = POLLIN},
        {.fd = STDIN_FILENO, .events = POLLIN},
        {.fd = STDOUT_FILENO, .events = out_len > 0 ? POLLOUT : 0},
    };
    int timeout_ms = 20; // accesses left open this long are reported (an mmap raises no more events)
    if (holding) {
      uint64_t now = now_us();
      int left = now >= hold_deadline_us ? 0 : (int)((hold_deadline_us - now + 999) / 1000);
      if (left < timeout_ms) timeout_ms = left;
    }
    if (poll(fds, 3, timeout_ms) < 0 && errno != EINTR) return 1;
    if (fds[0].revents & POLLIN) read_events();
    if (holding && now_us() >= hold_deadline_us) {
      char line[64];
      snprintf(line, sizeof line, "x %llu\n", (unsigned long long)(now_us() - hold_started_us));
      release_held();
      emit_control(line);
    }
    if (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) {
      if (read_commands() < 0) return 0;
    }
    if (now_us() - agent_tids_at_us > 1000000) refresh_agent_tids();
    uint64_t stale = now_us() - 20000;
    for (unsigned i = 0; i < ACCESS_SLOTS; i++) {
      struct access *a = &accesses[i];
      if (a->tid == 0 || !a->answered || a->reported || a->at_us >= stale) continue;
      if (a->truncate && is_truncate(syscall_of(a->tid, NULL))) continue; // reported once it is done
      report_access(a);
    }
    if (write_out() < 0) return 0;
  }
}
