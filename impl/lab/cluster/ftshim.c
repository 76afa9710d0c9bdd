/* The timed waits libfaketime 0.9.10 gets wrong, for flk cluster's clock faults.

   flk cluster runs a region's flk serve under libfaketime with only the wall clock moved
   (FAKETIME_DONT_FAKE_MONOTONIC=1: a real host's clock skew or step moves CLOCK_REALTIME,
   never CLOCK_MONOTONIC). This library is preloaded before libfaketime and replaces two of
   its calls:

   * clock_nanosleep: libfaketime answers EINVAL when it leaves the monotonic clock alone
     (Python's time.sleep waits with it, on a CLOCK_MONOTONIC deadline);
   * sem_clockwait: libfaketime moves the deadline to another epoch and the wait never ends
     (Python's timed lock acquire: Event.wait, Queue.get(timeout=), Condition.wait).

   Both call the C library's own function (looked up in libc.so.6, not the next library
   in the chain): a monotonic deadline as given; a deadline on a moved clock (the wall
   clock) is in the process's faked time, so it is moved back by the offset between the
   clock as the process sees it (clock_gettime through libfaketime) and the kernel's (the
   C library's clock_gettime). Built by flk.impl.lab.cluster.faketime at run time. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <semaphore.h>
#include <time.h>

typedef int (*gettime_fn)(clockid_t, struct timespec *);
typedef int (*clockwait_fn)(sem_t *, clockid_t, const struct timespec *);
typedef int (*nanosleep_fn)(clockid_t, int, const struct timespec *, struct timespec *);

static gettime_fn libc_gettime;
static clockwait_fn libc_clockwait;
static nanosleep_fn libc_nanosleep;

static void bind_libc(void) {
    if (libc_gettime && libc_clockwait && libc_nanosleep)
        return;
    void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
    if (!libc)
        libc = dlopen("libc.so.6", RTLD_NOW);
    if (!libc)  /* not glibc: the next library's (never this one's own: no recursion) */
        libc = RTLD_NEXT;
    libc_gettime = (gettime_fn)dlsym(libc, "clock_gettime");
    libc_clockwait = (clockwait_fn)dlsym(libc, "sem_clockwait");
    libc_nanosleep = (nanosleep_fn)dlsym(libc, "clock_nanosleep");
}

/* The absolute deadline `at` on `clock`, computed from the process's view of the clock,
   as the kernel's clock will reach it. */
static struct timespec kernel_deadline(clockid_t clock, const struct timespec *at) {
    struct timespec seen, real, out;
    if (clock == CLOCK_MONOTONIC || clock_gettime(clock, &seen) != 0 || libc_gettime(clock, &real) != 0)
        return *at;
    long long ns = (long long)at->tv_sec * 1000000000LL + at->tv_nsec
                   - ((long long)(seen.tv_sec - real.tv_sec) * 1000000000LL + (seen.tv_nsec - real.tv_nsec));
    out.tv_sec = (time_t)(ns / 1000000000LL);
    out.tv_nsec = (long)(ns % 1000000000LL);
    if (out.tv_nsec < 0) {
        out.tv_sec -= 1;
        out.tv_nsec += 1000000000L;
    }
    return out;
}

int sem_clockwait(sem_t *sem, clockid_t clock, const struct timespec *abstime) {
    bind_libc();
    struct timespec at = kernel_deadline(clock, abstime);
    return libc_clockwait(sem, clock, &at);
}

int clock_nanosleep(clockid_t clock, int flags, const struct timespec *request, struct timespec *remain) {
    bind_libc();
    if (!(flags & TIMER_ABSTIME))
        return libc_nanosleep(clock, flags, request, remain);
    struct timespec at = kernel_deadline(clock, request);
    return libc_nanosleep(clock, flags, &at, remain);
}
