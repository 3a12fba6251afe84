#include "textflag.h"

// SHA1 of two independent streams at once with the SHA extensions.
//
// One SHA1 stream is bound by the latency of SHA1RNDS4 (each 4 rounds
// depend on the previous 4), but the CPU can start a new SHA1RNDS4 before
// the last one is done (measured on the bench VM: 1.9 ns for a chain of
// dependent ones, 0.93 ns each for two independent chains), so a second,
// independent stream interleaved instruction by instruction runs in the
// gaps and costs little extra time.
//
// Per stream: ABCD in one register (A in the top dword), E in the top dword
// of another. Message words are byte-swapped and reversed (PSHUFB with
// bswapmask) so that W[4i] is the top dword, as the SHA instructions expect.
// Four rounds (step i, 0..19):
//
//	W(i)  = SHA1MSG2(SHA1MSG1(W(i-4), W(i-3)) ^ W(i-2), W(i-1))   (i >= 4)
//	E'    = i == 0 ? E + W(0) : SHA1NEXTE(ABCD before step i-1, W(i))
//	ABCD  = SHA1RNDS4(ABCD, E', i/5)
//
// and after step 19: E += rol30(A before step 19) (SHA1NEXTE), ABCD += saved.
//
// Registers: stream a: ABCD X0, E X1/X2 (alternating), W X3-X6;
// stream b: ABCD X7, E X8/X9, W X10-X13; X14 the shuffle mask. The states at
// the start of a block are saved on the stack (0-63(SP)).

// W(i) into M0, from M0 = W(i-4), M1 = W(i-3), M2 = W(i-2), M3 = W(i-1).
#define SCHED(M0, M1, M2, M3) \
	SHA1MSG1 M1, M0; \
	PXOR M2, M0; \
	SHA1MSG2 M3, M0

// Four rounds with function F: ECUR holds ABCD from before the previous
// step; ENEXT receives ABCD from before this one.
#define STEP(F, W, ECUR, ENEXT, ABCD) \
	SHA1NEXTE W, ECUR; \
	MOVO ABCD, ENEXT; \
	SHA1RNDS4 $F, ECUR, ABCD

#define LOADW(P, OFF, M) \
	MOVOU OFF(P), M; \
	PSHUFB X14, M

// func blockSHANIx2(a, b *[5]uint32, pa, pb *byte, blocks int)
TEXT ·blockSHANIx2(SB), NOSPLIT, $64-40
	MOVQ a+0(FP), AX
	MOVQ b+8(FP), BX
	MOVQ pa+16(FP), SI
	MOVQ pb+24(FP), DI
	MOVQ blocks+32(FP), CX
	TESTQ CX, CX
	JZ done
	MOVOU bswapmask<>(SB), X14

	MOVOU (AX), X0
	PSHUFD $0x1b, X0, X0
	PXOR X1, X1
	PINSRD $3, 16(AX), X1
	MOVOU (BX), X7
	PSHUFD $0x1b, X7, X7
	PXOR X8, X8
	PINSRD $3, 16(BX), X8

loop:
	MOVOU X0, 0(SP)
	MOVOU X1, 16(SP)
	MOVOU X7, 32(SP)
	MOVOU X8, 48(SP)
	LOADW(SI, 0, X3)
	LOADW(DI, 0, X10)
	LOADW(SI, 16, X4)
	LOADW(DI, 16, X11)
	LOADW(SI, 32, X5)
	LOADW(DI, 32, X12)
	LOADW(SI, 48, X6)
	LOADW(DI, 48, X13)

	PADDD X3, X1
	MOVO X0, X2
	SHA1RNDS4 $0, X1, X0
	PADDD X10, X8
	MOVO X7, X9
	SHA1RNDS4 $0, X8, X7

	STEP(0, X4, X2, X1, X0)
	STEP(0, X11, X9, X8, X7)

	STEP(0, X5, X1, X2, X0)
	STEP(0, X12, X8, X9, X7)

	STEP(0, X6, X2, X1, X0)
	STEP(0, X13, X9, X8, X7)

	SCHED(X3, X4, X5, X6)
	SCHED(X10, X11, X12, X13)
	STEP(0, X3, X1, X2, X0)
	STEP(0, X10, X8, X9, X7)

	SCHED(X4, X5, X6, X3)
	SCHED(X11, X12, X13, X10)
	STEP(1, X4, X2, X1, X0)
	STEP(1, X11, X9, X8, X7)

	SCHED(X5, X6, X3, X4)
	SCHED(X12, X13, X10, X11)
	STEP(1, X5, X1, X2, X0)
	STEP(1, X12, X8, X9, X7)

	SCHED(X6, X3, X4, X5)
	SCHED(X13, X10, X11, X12)
	STEP(1, X6, X2, X1, X0)
	STEP(1, X13, X9, X8, X7)

	SCHED(X3, X4, X5, X6)
	SCHED(X10, X11, X12, X13)
	STEP(1, X3, X1, X2, X0)
	STEP(1, X10, X8, X9, X7)

	SCHED(X4, X5, X6, X3)
	SCHED(X11, X12, X13, X10)
	STEP(1, X4, X2, X1, X0)
	STEP(1, X11, X9, X8, X7)

	SCHED(X5, X6, X3, X4)
	SCHED(X12, X13, X10, X11)
	STEP(2, X5, X1, X2, X0)
	STEP(2, X12, X8, X9, X7)

	SCHED(X6, X3, X4, X5)
	SCHED(X13, X10, X11, X12)
	STEP(2, X6, X2, X1, X0)
	STEP(2, X13, X9, X8, X7)

	SCHED(X3, X4, X5, X6)
	SCHED(X10, X11, X12, X13)
	STEP(2, X3, X1, X2, X0)
	STEP(2, X10, X8, X9, X7)

	SCHED(X4, X5, X6, X3)
	SCHED(X11, X12, X13, X10)
	STEP(2, X4, X2, X1, X0)
	STEP(2, X11, X9, X8, X7)

	SCHED(X5, X6, X3, X4)
	SCHED(X12, X13, X10, X11)
	STEP(2, X5, X1, X2, X0)
	STEP(2, X12, X8, X9, X7)

	SCHED(X6, X3, X4, X5)
	SCHED(X13, X10, X11, X12)
	STEP(3, X6, X2, X1, X0)
	STEP(3, X13, X9, X8, X7)

	SCHED(X3, X4, X5, X6)
	SCHED(X10, X11, X12, X13)
	STEP(3, X3, X1, X2, X0)
	STEP(3, X10, X8, X9, X7)

	SCHED(X4, X5, X6, X3)
	SCHED(X11, X12, X13, X10)
	STEP(3, X4, X2, X1, X0)
	STEP(3, X11, X9, X8, X7)

	SCHED(X5, X6, X3, X4)
	SCHED(X12, X13, X10, X11)
	STEP(3, X5, X1, X2, X0)
	STEP(3, X12, X8, X9, X7)

	SCHED(X6, X3, X4, X5)
	SCHED(X13, X10, X11, X12)
	STEP(3, X6, X2, X1, X0)
	STEP(3, X13, X9, X8, X7)

	// E += rol30(A before step 19) (in X1, X8); ABCD += saved.
	MOVOU 16(SP), X3
	SHA1NEXTE X3, X1
	MOVOU 0(SP), X4
	PADDD X4, X0
	MOVOU 48(SP), X10
	SHA1NEXTE X10, X8
	MOVOU 32(SP), X11
	PADDD X11, X7

	ADDQ $64, SI
	ADDQ $64, DI
	DECQ CX
	JNZ loop

	PSHUFD $0x1b, X0, X0
	MOVOU X0, (AX)
	PEXTRD $3, X1, 16(AX)
	PSHUFD $0x1b, X7, X7
	MOVOU X7, (BX)
	PEXTRD $3, X8, 16(BX)

done:
	RET

// func cpuidSHA() bool: CPUID.(EAX=7,ECX=0):EBX bit 29.
TEXT ·cpuidSHA(SB), NOSPLIT, $0-1
	MOVL $0, AX
	CPUID
	CMPL AX, $7
	JB no
	MOVL $7, AX
	MOVL $0, CX
	CPUID
	SHRL $29, BX
	ANDL $1, BX
	MOVB BX, ret+0(FP)
	RET
no:
	MOVB $0, ret+0(FP)
	RET

// PSHUFB mask reversing the 16 bytes: big-endian words, W[4i] on top.
DATA bswapmask<>+0(SB)/8, $0x08090a0b0c0d0e0f
DATA bswapmask<>+8(SB)/8, $0x0001020304050607
GLOBL bswapmask<>(SB), RODATA|NOPTR, $16
