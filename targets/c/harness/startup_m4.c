/* Bare-metal start-up of the mcu-sim harness on a Cortex-M4 with FPU under qemu (-M mps2-an386), linked with
 * mps2_an386.ld, `--specs=rdimon.specs -nostartfiles` (newlib with semihosting, no crt0): the vector table, a reset
 * handler that turns the FPU on in IEEE mode before any float code, copies .data, zeroes .bss, opens the semihosting
 * stdio, runs the constructors and main(argc, argv) (argv from SYS_GET_CMDLINE, split at spaces), and ends qemu with
 * main's status through SYS_EXIT_EXTENDED. A fault prints its name and ends with status 6.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* From mps2_an386.ld. */
extern uint32_t _sidata[], _sdata[], _edata[], _sbss[], _ebss[];
extern uint8_t _estack[], __heap_start[], __heap_end[];

/* From newlib. */
extern void initialise_monitor_handles(void);
extern void __libc_init_array(void);
extern int main(int argc, char **argv);

void Reset_Handler(void);
void cnnc_start(void);
void cnnc_fault(void);
void _init(void);
void _fini(void);
void *_sbrk(ptrdiff_t incr);

/* ARM semihosting operations (ARM DUI 0471, "Semihosting operations"). */
enum { SYS_WRITE0 = 0x04, SYS_GET_CMDLINE = 0x15, SYS_EXIT = 0x18, SYS_EXIT_EXTENDED = 0x20 };
enum { ADP_STOPPED_APPLICATION_EXIT = 0x20026, ADP_STOPPED_RUN_TIME_ERROR = 0x20023 };

static int cnnc_semihost(int op, const void *arg) {
  register int r0 __asm__("r0") = op;
  register const void *r1 __asm__("r1") = arg;
  __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
  return r0;
}

static void cnnc_exit(int status) {
  uint32_t block[2];
  block[0] = ADP_STOPPED_APPLICATION_EXIT;
  block[1] = (uint32_t)status;
  cnnc_semihost(SYS_EXIT_EXTENDED, block);
  /* A host without SYS_EXIT_EXTENDED: AArch32 SYS_EXIT takes the reason alone, so only success or failure. */
  cnnc_semihost(SYS_EXIT, (const void *)(uintptr_t)(status == 0 ? ADP_STOPPED_APPLICATION_EXIT
                                                                  : ADP_STOPPED_RUN_TIME_ERROR));
  for (;;) {
  }
}

/* CPACR (0xE000ED88) CP10/CP11 full access, then FPSCR = 0 and FPDSCR (0xE000EF3C, the FPSCR of exception
 * handlers) = 0: round to nearest, FZ = 0 (subnormals kept), DN = 0 (NaNs propagate), AHP = 0: IEEE 754 mode, as
 * on the host. Naked and in assembly so that no compiler-generated code touches the FPU before it is on. */
__attribute__((naked, noreturn)) void Reset_Handler(void) {
  __asm__ volatile(
      "movw r0, #0xed88\n"
      "movt r0, #0xe000\n"
      "ldr r1, [r0]\n"
      "orr r1, r1, #(0xf << 20)\n"
      "str r1, [r0]\n"
      "dsb\n"
      "isb\n"
      "movs r1, #0\n"
      "vmsr fpscr, r1\n"
      "movw r0, #0xef3c\n"
      "movt r0, #0xe000\n"
      "str r1, [r0]\n"
      "b cnnc_start\n");
}

#define CNNC_MAX_ARGS 8
static char cnnc_cmdline[512];
static char *cnnc_argv[CNNC_MAX_ARGS + 1];

/* argv from the semihosting command line (qemu: -semihosting-config arg=...,arg=..., joined with spaces). */
static int cnnc_args(void) {
  struct {
    char *buffer;
    int size;
  } block;
  int argc = 0;
  char *p = cnnc_cmdline;
  block.buffer = cnnc_cmdline;
  block.size = (int)sizeof cnnc_cmdline - 1;
  if (cnnc_semihost(SYS_GET_CMDLINE, &block) != 0) return 0;
  cnnc_cmdline[sizeof cnnc_cmdline - 1] = '\0';
  while (*p != '\0' && argc < CNNC_MAX_ARGS) {
    while (*p == ' ') *p++ = '\0';
    if (*p == '\0') break;
    cnnc_argv[argc++] = p;
    while (*p != '\0' && *p != ' ') p++;
  }
  while (*p == ' ') *p++ = '\0';
  cnnc_argv[argc] = NULL;
  return argc;
}

void cnnc_start(void) {
  uint32_t *src = _sidata, *dst = _sdata;
  int argc, status;
  while (dst < _edata) *dst++ = *src++;
  for (dst = _sbss; dst < _ebss; dst++) *dst = 0;
  initialise_monitor_handles();
  __libc_init_array();
  argc = cnnc_args();
  status = main(argc, cnnc_argv);
  fflush(NULL);
  cnnc_exit(status);
}

void cnnc_fault(void) {
  cnnc_semihost(SYS_WRITE0, "cnnc-startup: fault (HardFault, MemManage, BusFault or UsageFault)\n");
  cnnc_exit(6);
}

/* No crti.o with -nostartfiles: the hooks __libc_init_array and __libc_fini_array call. */
void _init(void) {
}

void _fini(void) {
}

/* malloc's memory (newlib stdio buffers): from the end of .bss to the bottom of the stack, as the linker script
 * sets it, instead of librdimon's weak _sbrk, which trusts SYS_HEAPINFO or the stack pointer. */
void *_sbrk(ptrdiff_t incr) {
  static uint8_t *heap_top = NULL;
  uint8_t *previous;
  if (heap_top == NULL) heap_top = __heap_start;
  if (incr > __heap_end - heap_top || incr < __heap_start - heap_top) {
    errno = ENOMEM;
    return (void *)-1;
  }
  previous = heap_top;
  heap_top += incr;
  return previous;
}

/* The Cortex-M4 vector table: initial stack pointer, then the 15 system exceptions. No interrupt is enabled. */
static struct {
  void *stack;
  void (*handler[15])(void);
} const cnnc_vectors __attribute__((section(".isr_vector"), used)) = {
    _estack,
    {
        Reset_Handler, cnnc_fault, /* NMI */
        cnnc_fault,                /* HardFault */
        cnnc_fault,                /* MemManage */
        cnnc_fault,                /* BusFault */
        cnnc_fault,                /* UsageFault */
        NULL, NULL, NULL, NULL,    /* reserved */
        cnnc_fault,                /* SVCall */
        cnnc_fault,                /* DebugMonitor */
        NULL,                      /* reserved */
        cnnc_fault,                /* PendSV */
        cnnc_fault,                /* SysTick */
    },
};
