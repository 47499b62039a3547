/* Guest clock helper for the QEMU rig (static, no dependencies).
 *
 *   clk now          print CLOCK_REALTIME in microseconds
 *   clk tick MS      print "T <realtime_us>" every MS milliseconds, forever
 *   clk uptime       print CLOCK_BOOTTIME in seconds with 3 decimals
 *   clk marks DEV MS put a dm-log-writes mark "t<realtime_us>" into device-mapper
 *                    device DEV every MS milliseconds, forever (DM_TARGET_MSG
 *                    ioctl: no fork per mark, so marks can be dense)
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
#include <sys/ioctl.h>
#include <linux/dm-ioctl.h>

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

int main(int argc, char **argv)
{
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
	fprintf(stderr, "usage: clk now | clk uptime | clk tick MS | clk marks DEV MS\n");
	return 2;
}
