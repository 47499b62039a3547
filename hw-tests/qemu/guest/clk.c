/* Guest clock helper for the QEMU rig (static, no dependencies).
 *
 *   clk now          print CLOCK_REALTIME in microseconds
 *   clk tick MS      print "T <realtime_us>" every MS milliseconds, forever
 *   clk uptime       print CLOCK_BOOTTIME in seconds with 3 decimals
 *   clk marks DEV MS put a dm-log-writes mark "t<realtime_us>" into device-mapper
 *                    device DEV every MS milliseconds, forever (DM_TARGET_MSG
 *                    ioctl: no fork per mark, so marks can be dense)
 *   clk press LABEL FILE US...
 *                    a button on gpio-sim: write "pull-down" (pressed) to FILE, then
 *                    after US[0] microseconds "pull-up", after US[1] "pull-down", and
 *                    so on (each gap counted from the previous write's planned time,
 *                    or its actual one when that was late); prints "@rig press LABEL
 *                    <realtime_us> <monotonic_us> <offsets>", the clocks at the
 *                    first write and each write's actual offset from it in us, so
 *                    the host can check the edges were as planned (a bounce of 6
 *                    edges within 3 ms, a second press within the double-press window)
 *   clk v4l2-button DEV NAME
 *                    press the V4L2 button control called NAME of DEV (vivid's
 *                    "Disconnect"); print CLOCK_REALTIME in microseconds just before
 *                    and just after the VIDIOC_S_CTRL ("T0 T1"): the moment of the
 *                    loss to within the ioctl, where a tool's start-up would add
 *                    a second under TCG
 *   clk ctl SOCKET WORD
 *                    one request to grabd run's control socket (a line in, a JSON
 *                    line out, printed), as `grabd ctl WORD` makes it, without that
 *                    client's start-up: loading grabd and its libav libraries takes
 *                    a loaded TCG guest over a second, which is not the service's
 *                    time to answer
 *
 * The host timestamps every "T" line as it arrives on the serial console and
 * takes min(host_arrival - guest_time) as the guest-to-host clock offset.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <linux/dm-ioctl.h>
#include <linux/videodev2.h>

static long long now_us(clockid_t id)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	return (long long)ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

static int dm_message(int fd, const char *dev, const char *msg)
{
	char buf[sizeof(struct dm_ioctl) + sizeof(struct dm_target_msg) + 256];
	struct dm_ioctl *io = (struct dm_ioctl *)buf;
	struct dm_target_msg *tm = (struct dm_target_msg *)(buf + sizeof(*io));

	memset(buf, 0, sizeof(buf));
	io->version[0] = DM_VERSION_MAJOR;
	io->data_size = sizeof(buf);
	io->data_start = sizeof(*io);
	strncpy(io->name, dev, sizeof(io->name) - 1);
	tm->sector = 0;
	strncpy(tm->message, msg, 200);
	return ioctl(fd, DM_TARGET_MSG, buf);
}

static long long mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int press(const char *label, const char *path, int ngaps, char **gaps)
{
	static const char *level[2] = { "pull-down", "pull-up" };
	char offsets[4096] = "";
	long long rt, t0, planned;
	int fd = open(path, O_WRONLY), i;

	if (fd < 0) {
		perror(path);
		return 1;
	}
	/* The edges are the test's input: a busy guest must not preempt them (a bounce
	 * spread over 5 ms by a grabd thread is no bounce). Best effort. */
	{
		struct sched_param sp = { .sched_priority = 50 };
		if (sched_setscheduler(0, SCHED_FIFO, &sp) < 0)
			perror("sched_setscheduler");
		mlockall(MCL_CURRENT);
	}
	rt = now_us(CLOCK_REALTIME);
	t0 = planned = mono_ns();
	for (i = 0; i <= ngaps; i++) {
		size_t len = strlen(level[i % 2]), used = strlen(offsets);
		if (i > 0) {
			planned += atoll(gaps[i - 1]) * 1000LL;
			/* sleep to within 2 ms of the planned time, then spin: sub-ms bounces */
			while (planned - mono_ns() > 2000000LL) {
				long long left = planned - mono_ns() - 2000000LL;
				struct timespec d = { left / 1000000000LL, left % 1000000000LL };
				nanosleep(&d, NULL);
			}
			while (mono_ns() < planned)
				;
			/* woken late: the next gaps keep their length (a bounce stays a bounce) */
			if (mono_ns() - planned > 100000LL)
				planned = mono_ns();
		}
		if (pwrite(fd, level[i % 2], len, 0) != (ssize_t)len) {
			perror(path);
			return 1;
		}
		snprintf(offsets + used, sizeof(offsets) - used, "%s%lld", i ? "," : "",
			 (mono_ns() - t0) / 1000LL);
	}
	close(fd);
	printf("@rig press %s %lld %lld %s\n", label, rt, t0 / 1000LL, offsets);
	return 0;
}

static int v4l2_button(const char *dev, const char *name)
{
	struct v4l2_queryctrl q;
	int fd = open(dev, O_RDWR);

	if (fd < 0) {
		perror(dev);
		return 1;
	}
	memset(&q, 0, sizeof(q));
	q.id = V4L2_CTRL_FLAG_NEXT_CTRL;
	while (ioctl(fd, VIDIOC_QUERYCTRL, &q) == 0) {
		if (q.type == V4L2_CTRL_TYPE_BUTTON && strcmp((char *)q.name, name) == 0) {
			struct v4l2_control c = { .id = q.id, .value = 1 };
			long long t0 = now_us(CLOCK_REALTIME);
			int rc = ioctl(fd, VIDIOC_S_CTRL, &c);
			long long t1 = now_us(CLOCK_REALTIME);

			if (rc < 0) {
				perror("VIDIOC_S_CTRL");
				return 1;
			}
			printf("%lld %lld\n", t0, t1);
			close(fd);
			return 0;
		}
		q.id |= V4L2_CTRL_FLAG_NEXT_CTRL;
	}
	fprintf(stderr, "%s: no button control named '%s'\n", dev, name);
	return 1;
}

static int ctl(const char *path, const char *word)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	char reply[4096];
	size_t got = 0;
	ssize_t n;
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	strncpy(addr.sun_path, path, sizeof(addr.sun_path) - 1);
	if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		perror(path);
		return 1;
	}
	if (dprintf(fd, "%s\n", word) < 0) {
		perror(path);
		return 1;
	}
	while (got < sizeof(reply) - 1 && (n = read(fd, reply + got, sizeof(reply) - 1 - got)) > 0) {
		got += (size_t)n;
		if (memchr(reply, '\n', got))
			break;
	}
	reply[got] = 0;
	close(fd);
	fputs(reply, stdout);
	return got ? 0 : 1;
}

int main(int argc, char **argv)
{
	if (argc >= 4 && strcmp(argv[1], "ctl") == 0)
		return ctl(argv[2], argv[3]);
	if (argc >= 4 && strcmp(argv[1], "v4l2-button") == 0)
		return v4l2_button(argv[2], argv[3]);
	if (argc >= 4 && strcmp(argv[1], "press") == 0)
		return press(argv[2], argv[3], argc - 4, argv + 4);
	if (argc >= 2 && strcmp(argv[1], "now") == 0) {
		printf("%lld\n", now_us(CLOCK_REALTIME));
		return 0;
	}
	if (argc >= 2 && strcmp(argv[1], "uptime") == 0) {
		long long us = now_us(CLOCK_BOOTTIME);
		printf("%lld.%03lld\n", us / 1000000LL, (us / 1000LL) % 1000LL);
		return 0;
	}
	if (argc >= 3 && strcmp(argv[1], "tick") == 0) {
		long ms = atol(argv[2]);
		struct timespec d = { ms / 1000, (ms % 1000) * 1000000L };
		setvbuf(stdout, NULL, _IOLBF, 0);
		for (;;) {
			printf("T %lld\n", now_us(CLOCK_REALTIME));
			nanosleep(&d, NULL);
		}
	}
	if (argc >= 4 && strcmp(argv[1], "marks") == 0) {
		long ms = atol(argv[3]);
		struct timespec d = { ms / 1000, (ms % 1000) * 1000000L };
		char msg[64];
		int fd = open("/dev/mapper/control", O_RDWR);
		if (fd < 0) {
			perror("/dev/mapper/control");
			return 1;
		}
		for (;;) {
			snprintf(msg, sizeof(msg), "mark t%lld", now_us(CLOCK_REALTIME));
			if (dm_message(fd, argv[2], msg) < 0) {
				perror("DM_TARGET_MSG");
				return 1;
			}
			nanosleep(&d, NULL);
		}
	}
	fprintf(stderr, "usage: clk now | clk uptime | clk tick MS | clk marks DEV MS | clk press LABEL FILE US... | clk v4l2-button DEV NAME | clk ctl SOCKET WORD\n");
	return 2;
}
