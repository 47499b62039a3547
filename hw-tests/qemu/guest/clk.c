/* Guest clock helper for the QEMU rig (static, no dependencies).
 *
 *   clk now          print CLOCK_REALTIME in microseconds
 *   clk tick MS      print "T <realtime_us>" every MS milliseconds, forever
 *   clk uptime       print CLOCK_BOOTTIME in seconds with 3 decimals
 *
 * The host timestamps every "T" line as it arrives on the serial console and
 * takes min(host_arrival - guest_time) as the guest-to-host clock offset.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static long long now_us(clockid_t id)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	return (long long)ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
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
	fprintf(stderr, "usage: clk now | clk uptime | clk tick MS\n");
	return 2;
}
