/* CPU benchmark guest: a CoreMark-like mix of linked-list work, integer matrix arithmetic, a
   character state machine, CRC-16, and double-precision matrix and square-root work. Prints
   a checksum (which must agree between machines) and its own retired-instruction count. */
#include "rt.h"

#ifndef ITERATIONS
#define ITERATIONS 18000
#endif

#define LIST_NODES 200
#define MATRIX_N 16
#define FMATRIX_N 10
#define TEXT_BYTES 256

struct node {
    struct node *next;
    i32 key;
    i32 value;
};

static struct node nodes[LIST_NODES];
static i32 ma[MATRIX_N][MATRIX_N], mb[MATRIX_N][MATRIX_N], mc[MATRIX_N][MATRIX_N];
static double fa[FMATRIX_N][FMATRIX_N], fb[FMATRIX_N][FMATRIX_N], fc[FMATRIX_N][FMATRIX_N];
static char text[TEXT_BYTES];

static u32 lcg_state = 12345;
static u32 lcg(void)
{
    lcg_state = lcg_state * 1103515245u + 12345u;
    return lcg_state >> 8;
}

static u16 crc16(u16 crc, u32 data)
{
    for (int i = 0; i < 32; i++) {
        u32 bit = ((data >> i) ^ crc) & 1;
        crc >>= 1;
        if (bit)
            crc ^= 0xa001;
    }
    return crc;
}

static struct node *list_build(void)
{
    for (int i = 0; i < LIST_NODES; i++) {
        nodes[i].key = (i32)(lcg() & 0xffff);
        nodes[i].value = i;
        nodes[i].next = i + 1 < LIST_NODES ? &nodes[i + 1] : 0;
    }
    return &nodes[0];
}

static struct node *list_reverse(struct node *head)
{
    struct node *previous = 0;
    while (head) {
        struct node *next = head->next;
        head->next = previous;
        previous = head;
        head = next;
    }
    return previous;
}

/* Bottom-up merge sort by key (as in CoreMark's list benchmark). */
static struct node *list_sort(struct node *list)
{
    int insize = 1;
    for (;;) {
        struct node *p = list, *tail = 0;
        list = 0;
        int merges = 0;
        while (p) {
            merges++;
            struct node *q = p;
            int psize = 0;
            for (int i = 0; i < insize && q; i++) {
                psize++;
                q = q->next;
            }
            int qsize = insize;
            while (psize > 0 || (qsize > 0 && q)) {
                struct node *e;
                if (psize == 0) {
                    e = q;
                    q = q->next;
                    qsize--;
                } else if (qsize == 0 || !q || p->key <= q->key) {
                    e = p;
                    p = p->next;
                    psize--;
                } else {
                    e = q;
                    q = q->next;
                    qsize--;
                }
                if (tail)
                    tail->next = e;
                else
                    list = e;
                tail = e;
            }
            p = q;
        }
        tail->next = 0;
        if (merges <= 1)
            return list;
        insize *= 2;
    }
}

static u32 list_work(u32 seed)
{
    struct node *head = list_build();
    head = list_reverse(head);
    for (struct node *n = head; n; n = n->next)
        n->key ^= (i32)(seed & 0xff);
    head = list_sort(head);
    u32 sum = 0;
    i32 find = (i32)(seed & 0xffff);
    for (struct node *n = head; n; n = n->next) {
        sum = sum * 31 + (u32)n->key;
        if (n->key >= find)
            sum ^= (u32)n->value;
    }
    return sum;
}

static u32 matrix_work(u32 seed)
{
    for (int i = 0; i < MATRIX_N; i++)
        for (int j = 0; j < MATRIX_N; j++) {
            ma[i][j] = (i32)((seed + (u32)(i * 7 + j)) & 0xff) - 128;
            mb[i][j] = (i32)((seed * 3 + (u32)(i + j * 5)) & 0x7f);
        }
    for (int i = 0; i < MATRIX_N; i++)
        for (int j = 0; j < MATRIX_N; j++) {
            i32 acc = 0;
            for (int k = 0; k < MATRIX_N; k++)
                acc += ma[i][k] * mb[k][j];
            mc[i][j] = acc;
        }
    u32 sum = 0;
    for (int i = 0; i < MATRIX_N; i++)
        for (int j = 0; j < MATRIX_N; j++) {
            i32 v = mc[i][j];
            sum += (u32)(v > 0 ? v >> 2 : -v) ^ (u32)(v & 0x3f);
        }
    return sum;
}

enum state { START, INTEGER, DECIMAL, EXPONENT, INVALID };

static u32 state_machine_work(u32 seed)
{
    static const char alphabet[] = "0123456789.,e+-x ";
    for (int i = 0; i < TEXT_BYTES - 1; i++)
        text[i] = alphabet[(lcg() ^ seed) % (sizeof alphabet - 1)];
    text[TEXT_BYTES - 1] = 0;
    u32 counts[5] = {0, 0, 0, 0, 0};
    enum state s = START;
    for (const char *c = text; *c; c++) {
        char ch = *c;
        if (ch == ',' || ch == ' ') {
            counts[s]++;
            s = START;
            continue;
        }
        switch (s) {
        case START:
            s = (ch >= '0' && ch <= '9') || ch == '+' || ch == '-' ? INTEGER : ch == '.' ? DECIMAL : INVALID;
            break;
        case INTEGER:
            s = ch >= '0' && ch <= '9' ? INTEGER : ch == '.' ? DECIMAL : ch == 'e' ? EXPONENT : INVALID;
            break;
        case DECIMAL:
            s = ch >= '0' && ch <= '9' ? DECIMAL : ch == 'e' ? EXPONENT : INVALID;
            break;
        case EXPONENT:
            s = (ch >= '0' && ch <= '9') || ch == '+' || ch == '-' ? EXPONENT : INVALID;
            break;
        case INVALID:
            break;
        }
    }
    return counts[0] + counts[1] * 3 + counts[2] * 5 + counts[3] * 7 + counts[4] * 11;
}

static u64 float_work(u32 seed)
{
    for (int i = 0; i < FMATRIX_N; i++)
        for (int j = 0; j < FMATRIX_N; j++) {
            fa[i][j] = (double)((int)((seed + (u32)(i * 3 + j)) % 17) - 8) / 4.0;
            fb[i][j] = (double)((int)((seed * 7 + (u32)(i + j)) % 13) - 6) / 8.0;
        }
    for (int i = 0; i < FMATRIX_N; i++)
        for (int j = 0; j < FMATRIX_N; j++) {
            double acc = 0.0;
            for (int k = 0; k < FMATRIX_N; k++)
                acc += fa[i][k] * fb[k][j];
            fc[i][j] = acc;
        }
    double norm = 0.0;
    for (int i = 0; i < FMATRIX_N; i++)
        for (int j = 0; j < FMATRIX_N; j++)
            norm += fc[i][j] * fc[i][j];
    double root;
#ifdef __riscv
    asm("fsqrt.d %0, %1" : "=f"(root) : "f"(norm + 1.0));
#else
    root = __builtin_sqrt(norm + 1.0); /* the native build (runtime/native/rt.h) */
#endif
    double ratio = norm / root;
    float single = (float)ratio * 0.5f + (float)seed;
    union {
        double d;
        u64 u;
    } bits = {.d = root + ratio};
    union {
        float f;
        u32 u;
    } sbits = {.f = single};
    return bits.u ^ sbits.u;
}

int main(void)
{
    u64 start = CSR_READ(minstret);
    u16 crc = 0xffff;
    u64 float_sum = 0;
    for (u32 iteration = 0; iteration < ITERATIONS; iteration++) {
        crc = crc16(crc, list_work(iteration));
        crc = crc16(crc, matrix_work(iteration));
        crc = crc16(crc, state_machine_work(iteration));
        float_sum += float_work(iteration);
    }
    u64 end = CSR_READ(minstret);
    p("bench.iterations", ITERATIONS);
    p("bench.crc", crc);
    p("bench.float", float_sum);
    p("bench.instret", end - start);
    return 0;
}
