// Early roles of a re-executed vzd, run from an ELF constructor before the
// Go runtime starts any thread (see doc.go for why each one is here):
//
//   _VZD_ROLE=supervise  the per-container supervisor: detach, clone the
//                        container's init stage, then reap it.
//   _VZD_ROLE=nsexec     join a container (cgroup, then every namespace
//                        through a pidfd) and run a command in it.
//                        It reaps the container's init, records its exit
//                        and copies its console to a size-capped log. No
//                        Go runtime, so it stays small.
//
//                        Its clone child is the init stage: it runs the
//                        program the agent sends (init_linux.go) and execs
//                        the container's init.
//
// Any other value (or none) returns to Go.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/mount.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static void die(const char *what) {
	fprintf(stderr, "vzd-nsexec: %s: %s\n", what, strerror(errno));
	_exit(255);
}

static long envnum(const char *name, long def) {
	const char *v = getenv(name);
	return v && *v ? strtol(v, NULL, 10) : def;
}

static int writeall(int fd, const char *p, size_t n) {
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

// join_cgroups writes our pid into each cgroup.procs path of the
// newline-separated list, before the cgroup namespace is joined, so that
// the namespace's root is the container's cgroup.
static void join_cgroups(const char *list) {
	char buf[64];
	int n = snprintf(buf, sizeof buf, "%d", getpid());
	char *copy = strdup(list), *save = NULL;
	for (char *p = strtok_r(copy, "\n", &save); p; p = strtok_r(NULL, "\n", &save)) {
		int fd = open(p, O_WRONLY | O_CLOEXEC);
		if (fd < 0 || writeall(fd, buf, (size_t)n) < 0) {
			fprintf(stderr, "vzd-nsexec: join cgroup %s: %s\n", p, strerror(errno));
			_exit(255);
		}
		close(fd);
	}
	free(copy);
}

static struct termios saved;
static int restore_tty = 0;

// relay copies our stdin to the pty master and the master to our stdout
// until the master hangs up (every slave closed).
static void relay(int master) {
	char buf[8192];
	int in_open = 1;
	for (;;) {
		struct pollfd p[2] = {{master, POLLIN, 0}, {in_open ? 0 : -1, POLLIN, 0}};
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
			ssize_t n = read(master, buf, sizeof buf);
			if (n <= 0) {
				if (n < 0 && errno == EINTR)
					continue;
				return;
			}
			writeall(1, buf, (size_t)n);
		}
		if (p[1].revents & (POLLIN | POLLHUP | POLLERR)) {
			ssize_t n = read(0, buf, sizeof buf);
			if (n <= 0)
				in_open = 0;
			else
				writeall(master, buf, (size_t)n);
		}
	}
}

static void nsexec(int argc, char **argv) {
	if (argc < 2) {
		fprintf(stderr, "vzd-nsexec: no command\n");
		_exit(255);
	}
	// Never let the container ptrace or open our /proc/PID/exe (the
	// host binary; CVE-2019-5736).
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	int pidfd = (int)envnum("_VZD_NS_FD", -1);
	long flags = envnum("_VZD_NS_FLAGS", 0);
	int tty = envnum("_VZD_TTY", 0) == 1;
	const char *cg = getenv("_VZD_CGROUPS");
	const char *term = getenv("TERM");
	if (cg && *cg)
		join_cgroups(cg);
	if (setns(pidfd, (int)flags) < 0)
		die("setns");
	close(pidfd);
	if (flags & CLONE_NEWUSER) {
		// We arrive as an unmapped host uid; become the container's root
		// so that exec keeps our capabilities in its user namespace.
		if (setgroups(0, NULL) < 0 || setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0)
			die("become container root");
	}
	if (chdir("/") < 0)
		die("chdir /");
	// The same bounding set as the container's init (dropCaps in
	// init_linux.go): sys_module, sys_rawio, sys_time, mac_override,
	// mac_admin.
	static const int drop[] = {16, 17, 25, 32, 33};
	for (size_t i = 0; i < sizeof drop / sizeof drop[0]; i++)
		if (prctl(PR_CAPBSET_DROP, drop[i], 0, 0, 0) < 0 && errno != EINVAL)
			die("drop capability");

	int master = -1;
	char slave[64] = "";
	if (tty) {
		// A pty of the container's own devpts: the command never gets a
		// host terminal fd.
		master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
		if (master < 0)
			die("open container /dev/ptmx");
		int unlock = 0, n = 0;
		if (ioctl(master, TIOCSPTLCK, &unlock) < 0 || ioctl(master, TIOCGPTN, &n) < 0)
			die("set up pty");
		snprintf(slave, sizeof slave, "/dev/pts/%d", n);
		struct winsize ws;
		if (ioctl(0, TIOCGWINSZ, &ws) == 0)
			ioctl(master, TIOCSWINSZ, &ws);
	}

	static char *env[8];
	static char termbuf[256];
	int e = 0;
	env[e++] = "container=vzd";
	env[e++] = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
	env[e++] = "HOME=/root";
	env[e++] = "USER=root";
	if (term && *term && strlen(term) < 200) {
		snprintf(termbuf, sizeof termbuf, "TERM=%s", term);
		env[e++] = termbuf;
	}
	env[e] = NULL;

	// setns(CLONE_NEWPID) takes effect for children only.
	pid_t child = fork();
	if (child < 0)
		die("fork");
	if (child == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
		if (tty) {
			setsid();
			int s = open(slave, O_RDWR);
			if (s < 0)
				die("open pty slave");
			ioctl(s, TIOCSCTTY, 0);
			dup2(s, 0);
			dup2(s, 1);
			dup2(s, 2);
			if (s > 2)
				close(s);
		}
		// No host fd past stdio reaches the container.
		syscall(SYS_close_range, 3U, ~0U, 0U);
		environ = env;
		execvp(argv[1], argv + 1);
		fprintf(stderr, "vzd exec: %s: %s\n", argv[1], strerror(errno));
		_exit(errno == ENOENT ? 127 : 126);
	}
	if (tty) {
		if (isatty(0) && tcgetattr(0, &saved) == 0) {
			struct termios raw = saved;
			cfmakeraw(&raw);
			tcsetattr(0, TCSANOW, &raw);
			restore_tty = 1;
		}
		relay(master);
		if (restore_tty)
			tcsetattr(0, TCSANOW, &saved);
	}
	int status;
	while (waitpid(child, &status, 0) < 0)
		if (errno != EINTR)
			die("wait");
	if (WIFEXITED(status))
		_exit(WEXITSTATUS(status));
	_exit(128 + WTERMSIG(status));
}

// --- reaper ---------------------------------------------------------------

static int logfd = -1;
static long long logsize = 0;

static void log_open(const char *path) {
	logfd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	struct stat st;
	logsize = (logfd >= 0 && fstat(logfd, &st) == 0) ? st.st_size : 0;
}

// log_write appends to the console log, rotating it to PATH.1 when it
// would pass max: at most twice max bytes are ever kept.
static void log_write(const char *path, long long max, const char *p, size_t n) {
	if (logfd < 0)
		return;
	if (logsize + (long long)n > max) {
		char old[4096];
		snprintf(old, sizeof old, "%s.1", path);
		close(logfd);
		rename(path, old);
		logfd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		logsize = 0;
		if (logfd < 0)
			return;
	}
	if (writeall(logfd, p, n) == 0)
		logsize += (long long)n;
}

static void record_exit(const char *path, int status) {
	int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	char when[64], tmp[4096], buf[256];
	strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
	int n = snprintf(buf, sizeof buf, "{\"exit_code\":%d,\"exited_at\":\"%s.%09ldZ\"}\n", code, when, ts.tv_nsec);
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return;
	if (writeall(fd, buf, (size_t)n) == 0 && fsync(fd) == 0) {
		close(fd);
		rename(tmp, path);
		return;
	}
	close(fd);
	unlink(tmp);
}

// move_cgroups writes our pid into each cgroup.procs path of the
// newline-separated list, ignoring failures.
static void move_cgroups(const char *list) {
	char pid[32];
	int n = snprintf(pid, sizeof pid, "%d", getpid());
	char *copy = strdup(list), *save = NULL;
	for (char *p = strtok_r(copy, "\n", &save); p; p = strtok_r(NULL, "\n", &save)) {
		int fd = open(p, O_WRONLY | O_CLOEXEC);
		if (fd >= 0) {
			writeall(fd, pid, (size_t)n);
			close(fd);
		}
	}
	free(copy);
}

static void reap(pid_t init, int master) {
	long long max = envnum("_VZD_REAP_MAX", 1 << 20);
	const char *logpath = getenv("_VZD_REAP_LOG");
	const char *exitpath = getenv("_VZD_REAP_EXIT");
	if (init <= 0 || !logpath || !exitpath)
		_exit(2);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigprocmask(SIG_BLOCK, &set, NULL);
	int sfd = signalfd(-1, &set, SFD_CLOEXEC);
	if (sfd < 0)
		_exit(2);
	if (master >= 0) {
		fcntl(master, F_SETFD, FD_CLOEXEC);
		fcntl(master, F_SETFL, fcntl(master, F_GETFL) | O_NONBLOCK);
	}
	log_open(logpath);
	const char *cgroups = getenv("_VZD_REAP_CGROUPS");
	int moved = !cgroups || !*cgroups;
	char buf[16384];
	for (;;) {
		int status;
		pid_t w = waitpid(-1, &status, WNOHANG);
		if (w == 0 && !moved) {
			// Init runs: leave the agent's cgroup (see supervisor.go).
			move_cgroups(cgroups);
			moved = 1;
			continue;
		}
		if (w == init) {
			// Keep what init printed last.
			ssize_t n;
			while (master >= 0 && (n = read(master, buf, sizeof buf)) > 0)
				log_write(logpath, max, buf, (size_t)n);
			record_exit(exitpath, status);
			_exit(0);
		}
		if (w > 0)
			continue;
		if (w < 0 && errno == ECHILD)
			_exit(3);
		struct pollfd p[2] = {{sfd, POLLIN, 0}, {master, POLLIN, 0}};
		if (poll(p, 2, -1) < 0)
			continue;
		if (p[0].revents & POLLIN) {
			struct signalfd_siginfo si;
			while (read(sfd, &si, sizeof si) < 0 && errno == EINTR)
				;
		}
		if (master >= 0 && (p[1].revents & (POLLIN | POLLHUP | POLLERR))) {
			ssize_t n = read(master, buf, sizeof buf);
			if (n > 0)
				log_write(logpath, max, buf, (size_t)n);
			else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
				// Every slave closed (EIO): nothing more to read
				// until init exits.
				close(master);
				master = -1;
			}
		}
	}
}

// --- supervisor -----------------------------------------------------------

static void init_stage(void);

static int write_file(const char *path, const char *data) {
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int r = writeall(fd, data, strlen(data));
	close(fd);
	return r;
}

// supervise is the per-container supervisor. The agent passes fds
// 3 = console pty master, 4 = its slave, 5 = the init stage's end of a
// socketpair, 6 = a pipe for our report. We double fork (the agent reaps
// our parent at once; we are reparented to the host's init, in a session
// of our own), clone init into new namespaces, map its ids, report
// "SUPERVISOR_PID INIT_PID" and become the reaper. The agent does the rest
// of the set-up over the socket (see supervisor.go).
static void supervise(int argc, char **argv) {
	const int master = 3, slave = 4, sock = 5, report = 6;
	pid_t p = fork();
	if (p < 0)
		_exit(255);
	if (p > 0)
		_exit(0);
	setsid();
	long flags = envnum("_VZD_SUP_FLAGS", 0);
	const char *uidmap = getenv("_VZD_SUP_UIDMAP");
	const char *gidmap = getenv("_VZD_SUP_GIDMAP");
	int sync[2];
	if (pipe2(sync, O_CLOEXEC) < 0) {
		dprintf(report, "error pipe: %s\n", strerror(errno));
		_exit(1);
	}
	pid_t child = (pid_t)syscall(SYS_clone, (unsigned long)flags | SIGCHLD, NULL, NULL, NULL, NULL);
	if (child == 0) {
		char c;
		close(sync[1]);
		if (read(sync[0], &c, 1) != 1)
			_exit(255);
		if ((flags & CLONE_NEWUSER) && (setgroups(0, NULL) < 0 || setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0))
			_exit(255);
		setsid();
		dup2(slave, 0);
		dup2(slave, 1);
		dup2(slave, 2);
		ioctl(0, TIOCSCTTY, 0);
		dup2(sock, 3);
		syscall(SYS_close_range, 4U, ~0U, 0U);
		// Nothing in the container may ptrace us or open our
		// /proc/PID/exe (the host binary) until we exec its init.
		prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
		// The init stage runs right here, in this single-threaded copy
		// of the supervisor: no exec of the (large) vzd binary on the
		// start path.
		init_stage();
	}
	close(sync[0]);
	// A report to an agent that died must not kill us (only here: an
	// ignored signal would stay ignored in the container's init).
	signal(SIGPIPE, SIG_IGN);
	if (child < 0) {
		dprintf(report, "error clone: %s\n", strerror(errno));
		_exit(1);
	}
	if (flags & CLONE_NEWUSER) {
		char path[64];
		snprintf(path, sizeof path, "/proc/%d/uid_map", child);
		int bad = !uidmap || write_file(path, uidmap) < 0;
		snprintf(path, sizeof path, "/proc/%d/gid_map", child);
		if (bad || !gidmap || write_file(path, gidmap) < 0) {
			dprintf(report, "error write id maps of %d: %s\n", child, strerror(errno));
			kill(child, SIGKILL);
			waitpid(child, NULL, 0);
			_exit(1);
		}
	}
	if (write(sync[1], "x", 1) != 1) {
		kill(child, SIGKILL);
		_exit(1);
	}
	close(sync[1]);
	close(sock);
	dprintf(report, "%d %d\n", getpid(), child);
	close(report);
	reap(child, master);
}

// --- init stage -------------------------------------------------------------

// The program the agent sends (see init_linux.go): NUL-terminated tokens.
struct prog {
	char *p, *end;
};

static char *next(struct prog *g) {
	if (g->p >= g->end)
		return NULL;
	char *t = g->p;
	char *z = memchr(t, 0, (size_t)(g->end - t));
	if (!z)
		return NULL;
	g->p = z + 1;
	return t;
}

static int mkdirp(char *path) {
	for (char *q = path + 1; *q; q++) {
		if (*q != '/')
			continue;
		*q = 0;
		int r = mkdir(path, 0755);
		*q = '/';
		if (r < 0 && errno != EEXIST)
			return -1;
	}
	return mkdir(path, 0755) < 0 && errno != EEXIST ? -1 : 0;
}

static const char *nz(const char *s) { return *s ? s : NULL; }

// stage_fail reports the failed step to the agent and exits.
static void stage_fail(int sock, const char *op, const char *arg) {
	char msg[1024];
	int n = snprintf(msg, sizeof msg, "%s %s: %s", op, arg ? arg : "", strerror(errno));
	if (write(sock, msg, (size_t)(n < (int)sizeof msg ? n : (int)sizeof msg - 1)) < 0)
		_exit(1);
	_exit(1);
}

static void init_stage(void) {
	const int sock = 3;
	static char buf[1 << 20];
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = {buf, sizeof buf};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
	ssize_t n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
	if (n <= 0)
		_exit(1);
	int rootfd = -1;
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
	if (cm && cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS)
		memcpy(&rootfd, CMSG_DATA(cm), sizeof(int));
	struct prog g = {buf, buf + n};
	char *op;
	while ((op = next(&g))) {
		char *a = next(&g);
		if (!a)
			break;
		if (strcmp(op, "unshare") == 0) {
			if (unshare((int)strtol(a, NULL, 10)) < 0)
				stage_fail(sock, op, a);
		} else if (strcmp(op, "mount") == 0) {
			char *dst = next(&g), *fstype = next(&g), *flags = next(&g), *data = next(&g);
			if (!data)
				break;
			if (mount(nz(a), dst, nz(fstype), strtoul(flags, NULL, 10), nz(data)) < 0)
				stage_fail(sock, "mount", dst);
		} else if (strcmp(op, "attach") == 0) {
			if (syscall(SYS_move_mount, rootfd, "", AT_FDCWD, a, 0x00000004 /* MOVE_MOUNT_F_EMPTY_PATH */) < 0)
				stage_fail(sock, op, a);
			close(rootfd);
		} else if (strcmp(op, "mkdirp") == 0) {
			if (mkdirp(a) < 0)
				stage_fail(sock, op, a);
		} else if (strcmp(op, "touch") == 0) {
			int fd = open(a, O_CREAT | O_RDONLY | O_CLOEXEC, 0666);
			if (fd < 0)
				stage_fail(sock, op, a);
			close(fd);
		} else if (strcmp(op, "symlink") == 0) {
			char *path = next(&g);
			if (!path)
				break;
			if (symlink(a, path) < 0)
				stage_fail(sock, op, path);
		} else if (strcmp(op, "hostname") == 0) {
			if (sethostname(a, strlen(a)) < 0)
				stage_fail(sock, op, a);
		} else if (strcmp(op, "write") == 0) {
			char *val = next(&g);
			if (!val)
				break;
			if (write_file(a, val) < 0)
				stage_fail(sock, op, a);
		} else if (strcmp(op, "pivot") == 0) {
			if (chdir(a) < 0 || syscall(SYS_pivot_root, ".", ".") < 0 || umount2(".", MNT_DETACH) < 0 || chdir("/") < 0)
				stage_fail(sock, op, a);
		} else if (strcmp(op, "capdrop") == 0) {
			if (prctl(PR_CAPBSET_DROP, strtol(a, NULL, 10), 0, 0, 0) < 0 && errno != EINVAL)
				stage_fail(sock, op, a);
		} else if (strcmp(op, "exec") == 0) {
			int argc = (int)strtol(a, NULL, 10);
			if (argc < 1 || argc > 256)
				break;
			char *argv[257];
			for (int i = 0; i < argc; i++)
				if (!(argv[i] = next(&g)))
					_exit(1);
			argv[argc] = NULL;
			char *env[] = {"container=vzd", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=linux", "HOME=/", NULL};
			// Every fd past stdio (the socket too: that is how the
			// agent learns the exec succeeded) closes on exec.
			syscall(SYS_close_range, 3U, ~0U, 4U /* CLOSE_RANGE_CLOEXEC */);
			execve(argv[0], argv, env);
			stage_fail(sock, "exec", argv[0]);
		} else {
			errno = EINVAL;
			stage_fail(sock, "unknown op", op);
		}
	}
	errno = EINVAL;
	stage_fail(sock, "program", "truncated");
}

__attribute__((constructor)) static void vzd_early(int argc, char **argv, char **envp) {
	(void)envp;
	const char *role = getenv("_VZD_ROLE");
	if (!role)
		return;
	if (strcmp(role, "nsexec") == 0)
		nsexec(argc, argv);
	else if (strcmp(role, "supervise") == 0)
		supervise(argc, argv);

}
