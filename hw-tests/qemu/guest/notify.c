/* A systemd notify socket for the QEMU rig's guest (static, no dependencies): what
 * systemd would receive from grabd, printed for the host.
 *
 *   notify PATH      bind an AF_UNIX datagram socket at PATH (grabd's NOTIFY_SOCKET)
 *                    and print every line of every datagram as
 *                    "@rig notify <realtime_us> <monotonic_us> <line>", forever
 *
 * Each line is stamped when it is received, on the guest's own clocks: realtime to
 * compare with grabd's log timestamps, monotonic for the intervals between pings.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>

static long long now_us(clockid_t id)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	return (long long)ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

int main(int argc, char **argv)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	char buf[4097];
	int fd;

	if (argc != 2 || strlen(argv[1]) >= sizeof(addr.sun_path)) {
		fprintf(stderr, "usage: notify PATH\n");
		return 2;
	}
	strcpy(addr.sun_path, argv[1]);
	unlink(argv[1]);
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		perror(argv[1]);
		return 1;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("@rig notify-listening %s\n", argv[1]);
	for (;;) {
		ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);
		long long rt = now_us(CLOCK_REALTIME), mono = now_us(CLOCK_MONOTONIC);
		char *line, *save = NULL;

		if (n < 0) {
			perror("recv");
			return 1;
		}
		buf[n] = 0;
		for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
			printf("@rig notify %lld %lld %s\n", rt, mono, line);
	}
}
