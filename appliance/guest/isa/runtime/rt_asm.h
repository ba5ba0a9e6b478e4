/* Constants shared by the runtime's assembly and C. */
#define FRAME_BYTES 256
#define MAGIC_RETURN 0x5245544e /* "RETN": ecall asking M-mode to end enter_mode */
