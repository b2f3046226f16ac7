/*
 * Imprint reference device in portable C99 (docs/protocol.md, version 1).
 *
 * The code a firmware team ports: framing with CRC-16/CCITT-FALSE and one
 * 1024-byte line buffer, the session verbs, key generation, a nonce-bound
 * PKCS#10 CSR, objects with staging and atomic commit, proof of possession,
 * the two-phase lock and RESET. Crypto goes through Mbed TLS (Debian's
 * libmbedtls-dev, 2.28). This file allocates nothing itself: every buffer is
 * static (Mbed TLS's pk and x509 contexts allocate internally; build Mbed TLS
 * with MBEDTLS_MEMORY_BUFFER_ALLOC_C on a target without malloc).
 *
 * Porting: replace the three platform parts marked PLATFORM below (the
 * serial port, the persistent store, the entropy source). Here the serial
 * port is a pseudo-terminal (so the station and `imprint conformance` can
 * talk to it on a PC) and the store is a directory of files written
 * atomically (write a temporary file, fsync, rename).
 *
 * The CSR is assembled by hand (csr_build): Mbed TLS's CSR writer
 * (mbedtls_x509write_csr) cannot add the challengePassword attribute that
 * carries the session nonce (protocol.md 4.4), so a firmware on Mbed TLS (or
 * on any stack whose CSR writer only knows extensionRequest) must write the
 * CertificationRequestInfo itself. It is about 80 lines of DER below.
 *
 * Usage: imprint-c-device --serial SERIAL --state-dir DIR
 *   prints "DEVICE <serial> <pty path>" on stdout, then serves the pty.
 */
#define _XOPEN_SOURCE 700
#define _DEFAULT_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecp.h>
#include <mbedtls/entropy.h>
#include <mbedtls/pk.h>
#include <mbedtls/sha256.h>
#include <mbedtls/x509_crt.h>

#define MAX_LINE 1024 /* including the LF (protocol.md 2.3) */
#define CHUNK 512     /* raw bytes per READ / PUT (HELLO chunk=) */
#define SLOT_MAX 4096 /* staging slot capacity (protocol.md 4.6: at least 4096) */
#define CSR_MAX 600
#define NONCE_MIN 16
#define NONCE_MAX 64

static const char *MODEL = "imprint-c-ref";
static const char *HW = "C1";
static const char *FW = "0.1.0";
static const char *CAPS = "HELLO,IDENT,KEYGEN,CSR,READ,PUT,COMMIT,PROVE,LOCK,RESET";

/* ------------------------------------------------------------------ state */

enum obj { OBJ_CERT, OBJ_CHAIN, OBJ_BROKERCA, OBJ_COUNT };
static const char *OBJ_NAME[OBJ_COUNT] = {"cert", "chain", "brokerca"};

struct slot {
    uint8_t active[SLOT_MAX];
    size_t active_len;
    int has_active;
    uint8_t staged[SLOT_MAX];
    size_t staged_len;
    int has_staged;
};

static char serial[65];
static const char *state_dir;
static int has_key;
static mbedtls_pk_context key;
static uint8_t spki[200];
static size_t spki_len;
static uint8_t csr[CSR_MAX];
static size_t csr_len;
static struct slot slots[OBJ_COUNT];
static char lock_token[9];
static int locked;

static mbedtls_entropy_context entropy;
static mbedtls_ctr_drbg_context drbg;

/* ------------------------------------------------------------------ small helpers */

static uint16_t crc16(const uint8_t *p, size_t n) {
    uint16_t crc = 0xFFFF;
    while (n--) {
        crc ^= (uint16_t)(*p++) << 8;
        for (int i = 0; i < 8; i++)
            crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
    }
    return crc;
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* base64url without padding; returns the length written or 0 if it does not fit. */
static size_t b64_encode(const uint8_t *in, size_t n, char *out, size_t cap) {
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n) v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n) v |= in[i + 2];
        size_t chars = n - i >= 3 ? 4 : n - i + 1;
        if (o + chars >= cap) return 0;
        for (size_t k = 0; k < chars; k++) out[o++] = B64[(v >> (18 - 6 * k)) & 63];
    }
    out[o] = 0;
    return o;
}

/* Decode base64url (trailing '=' tolerated). Returns -1 on a bad character or overflow. */
static long b64_decode(const char *in, uint8_t *out, size_t cap) {
    size_t n = strlen(in);
    while (n > 0 && in[n - 1] == '=') n--;
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        const char *p = strchr(B64, in[i]);
        if (!p || !in[i]) return -1;
        acc = (acc << 6) | (uint32_t)(p - B64);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o >= cap) return -1;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    if (n % 4 == 1) return -1;
    return (long)o;
}

static void hex_encode(const uint8_t *in, size_t n, char *out) {
    static const char H[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = H[in[i] >> 4];
        out[2 * i + 1] = H[in[i] & 15];
    }
    out[2 * n] = 0;
}

/* Percent-decode a text field in place (protocol.md 2.2). */
static void pct_decode(char *s) {
    char *w = s;
    for (char *r = s; *r; r++) {
        unsigned h, l;
        if (r[0] == '%' && r[1] && r[2] && sscanf((char[]){r[1], r[2], 0}, "%1x%1x", &h, &l) == 2) {
            *w++ = (char)(h * 16 + l);
            r += 2;
        } else {
            *w++ = *r;
        }
    }
    *w = 0;
}

/* uint: digits, no leading zeros (protocol.md 2.2). */
static int parse_uint(const char *s, unsigned long *v) {
    size_t n = strlen(s);
    if (n == 0 || n > 9 || (n > 1 && s[0] == '0')) return 0;
    unsigned long x = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        x = x * 10 + (unsigned long)(s[i] - '0');
    }
    *v = x;
    return 1;
}

static void sha256(const uint8_t *p, size_t n, uint8_t out[32]) { mbedtls_sha256_ret(p, n, out, 0); }

static int random_bytes(uint8_t *out, size_t n) { return mbedtls_ctr_drbg_random(&drbg, out, n) == 0; }

/* ------------------------------------------------------------------ PLATFORM: persistent store */

static int store_path(char *out, size_t cap, const char *name) {
    return snprintf(out, cap, "%s/%s", state_dir, name) < (int)cap;
}

/* Write a file atomically: temporary file, fsync, rename. */
static int store_write(const char *name, const uint8_t *p, size_t n) {
    char path[512], tmp[520];
    if (!store_path(path, sizeof path, name)) return 0;
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) return 0;
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(fd, p + off, n - off);
        if (w <= 0) {
            close(fd);
            return 0;
        }
        off += (size_t)w;
    }
    int ok = fsync(fd) == 0;
    close(fd);
    return ok && rename(tmp, path) == 0;
}

static long store_read(const char *name, uint8_t *p, size_t cap) {
    char path[512];
    if (!store_path(path, sizeof path, name)) return -1;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    long n = (long)read(fd, p, cap);
    close(fd);
    return n;
}

static void store_remove(const char *name) {
    char path[512];
    if (store_path(path, sizeof path, name)) unlink(path);
}

/* ------------------------------------------------------------------ key */

static int key_export_spki(void) {
    static uint8_t buf[200];
    int n = mbedtls_pk_write_pubkey_der(&key, buf, sizeof buf);
    if (n <= 0) return 0;
    memcpy(spki, buf + sizeof buf - n, (size_t)n);
    spki_len = (size_t)n;
    return 1;
}

static int key_load(void) {
    static uint8_t der[256];
    long n = store_read("key.der", der, sizeof der);
    if (n <= 0) return 0;
    mbedtls_pk_init(&key);
    if (mbedtls_pk_parse_key(&key, der, (size_t)n, NULL, 0) != 0) return 0;
    memset(der, 0, sizeof der);
    return key_export_spki();
}

static void wipe_objects(void) {
    for (int i = 0; i < OBJ_COUNT; i++) {
        slots[i].has_active = slots[i].has_staged = 0;
        slots[i].active_len = slots[i].staged_len = 0;
        store_remove(OBJ_NAME[i]);
    }
    csr_len = 0;
    lock_token[0] = 0;
}

static int key_generate(void) {
    static uint8_t der[256];
    if (has_key) mbedtls_pk_free(&key);
    has_key = 0;
    mbedtls_pk_init(&key);
    if (mbedtls_pk_setup(&key, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY)) != 0) return 500;
    if (mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(key), mbedtls_ctr_drbg_random, &drbg) != 0) return 500;
    int n = mbedtls_pk_write_key_der(&key, der, sizeof der);
    if (n <= 0) return 500;
    /* Persist before answering (protocol.md 4.3). */
    wipe_objects();
    int ok = store_write("key.der", der + sizeof der - n, (size_t)n);
    memset(der, 0, sizeof der);
    if (!ok || !key_export_spki()) return 507;
    has_key = 1;
    return 0;
}

/* ------------------------------------------------------------------ DER and the CSR */

/* Append tag + length + content to out at *o; 0 if it does not fit. */
static int der_put(uint8_t *out, size_t cap, size_t *o, uint8_t tag, const uint8_t *content, size_t n) {
    uint8_t hdr[4];
    size_t h = 0;
    hdr[h++] = tag;
    if (n < 0x80) {
        hdr[h++] = (uint8_t)n;
    } else if (n < 0x100) {
        hdr[h++] = 0x81;
        hdr[h++] = (uint8_t)n;
    } else {
        hdr[h++] = 0x82;
        hdr[h++] = (uint8_t)(n >> 8);
        hdr[h++] = (uint8_t)n;
    }
    if (*o + h + n > cap) return 0;
    memcpy(out + *o, hdr, h);
    memmove(out + *o + h, content, n);
    *o += h + n;
    return 1;
}

static int printable(const char *s) {
    for (; *s; s++)
        if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || strchr(" '()+,-./:=?", *s)))
            return 0;
    return 1;
}

/* One RDN: SET { SEQUENCE { OID, value } }. */
static int rdn(uint8_t *out, size_t cap, size_t *o, const uint8_t *oid, size_t oid_len, uint8_t str_tag, const char *value) {
    uint8_t atv[128], set[140];
    size_t a = 0, s = 0;
    if (!der_put(atv, sizeof atv, &a, 0x06, oid, oid_len)) return 0;
    if (!der_put(atv, sizeof atv, &a, str_tag, (const uint8_t *)value, strlen(value))) return 0;
    if (!der_put(set, sizeof set, &s, 0x30, atv, a)) return 0;
    return der_put(out, cap, o, 0x31, set, s);
}

/*
 * PKCS#10 (RFC 2986) by hand:
 *   CertificationRequest ::= SEQUENCE { certificationRequestInfo, signatureAlgorithm, signature BIT STRING }
 *   CertificationRequestInfo ::= SEQUENCE { version INTEGER 0, subject Name, subjectPKInfo, attributes [0] }
 * with subject CN=<serial>, serialNumber=<serial> and the one attribute
 * challengePassword = UTF8String lowercase-hex(nonce).
 */
static int csr_build(const uint8_t *nonce, size_t nonce_len) {
    static const uint8_t OID_CN[] = {0x55, 0x04, 0x03};
    static const uint8_t OID_SN[] = {0x55, 0x04, 0x05};
    static const uint8_t OID_CHALLENGE[] = {0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x09, 0x07};
    static const uint8_t ALG_ECDSA_SHA256[] = {0x30, 0x0A, 0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02};
    static uint8_t name[200], rdns[200], attr[200], attrs[220], cri_body[500], cri[520], body[600];
    uint8_t hash[32], sig[MBEDTLS_ECDSA_MAX_LEN + 1];
    char hexnonce[2 * NONCE_MAX + 1];
    size_t n = 0, r = 0, a = 0, as = 0, cb = 0, c = 0, b = 0, sig_len = 0;

    if (!rdn(rdns, sizeof rdns, &r, OID_CN, sizeof OID_CN, 0x0C, serial)) return 0;
    if (!rdn(rdns, sizeof rdns, &r, OID_SN, sizeof OID_SN, printable(serial) ? 0x13 : 0x0C, serial)) return 0;
    if (!der_put(name, sizeof name, &n, 0x30, rdns, r)) return 0;

    hex_encode(nonce, nonce_len, hexnonce);
    uint8_t utf8[2 * NONCE_MAX + 4], set[2 * NONCE_MAX + 8];
    size_t u = 0, s = 0;
    if (!der_put(utf8, sizeof utf8, &u, 0x0C, (const uint8_t *)hexnonce, 2 * nonce_len)) return 0;
    if (!der_put(set, sizeof set, &s, 0x31, utf8, u)) return 0;
    if (!der_put(attr, sizeof attr, &a, 0x06, OID_CHALLENGE, sizeof OID_CHALLENGE)) return 0;
    memcpy(attr + a, set, s);
    a += s;
    uint8_t seq[220];
    size_t q = 0;
    if (!der_put(seq, sizeof seq, &q, 0x30, attr, a)) return 0;
    if (!der_put(attrs, sizeof attrs, &as, 0xA0, seq, q)) return 0;

    static const uint8_t VERSION0[] = {0x02, 0x01, 0x00};
    memcpy(cri_body, VERSION0, sizeof VERSION0);
    cb = sizeof VERSION0;
    if (cb + n + spki_len + as > sizeof cri_body) return 0;
    memcpy(cri_body + cb, name, n);
    cb += n;
    memcpy(cri_body + cb, spki, spki_len);
    cb += spki_len;
    memcpy(cri_body + cb, attrs, as);
    cb += as;
    if (!der_put(cri, sizeof cri, &c, 0x30, cri_body, cb)) return 0;

    sha256(cri, c, hash);
    sig[0] = 0; /* BIT STRING: no unused bits */
    if (mbedtls_pk_sign(&key, MBEDTLS_MD_SHA256, hash, 32, sig + 1, &sig_len, mbedtls_ctr_drbg_random, &drbg) != 0) return 0;

    memcpy(body, cri, c);
    b = c;
    memcpy(body + b, ALG_ECDSA_SHA256, sizeof ALG_ECDSA_SHA256);
    b += sizeof ALG_ECDSA_SHA256;
    if (!der_put(body, sizeof body, &b, 0x03, sig, sig_len + 1)) return 0;
    csr_len = 0;
    return der_put(csr, sizeof csr, &csr_len, 0x30, body, b);
}

/* Length of the DER element at p (tag 0x30 with definite length), 0 if malformed. */
static size_t der_element_len(const uint8_t *p, size_t avail) {
    if (avail < 2 || p[0] != 0x30) return 0;
    size_t len, h;
    if (p[1] < 0x80) {
        len = p[1];
        h = 2;
    } else {
        size_t k = p[1] & 0x7F;
        if (k == 0 || k > 2 || avail < 2 + k) return 0;
        len = 0;
        for (size_t i = 0; i < k; i++) len = (len << 8) | p[2 + i];
        h = 2 + k;
    }
    return h + len <= avail ? h + len : 0;
}

/* ------------------------------------------------------------------ PLATFORM: the serial port (a pty here) */

static int port_fd = -1;

static void port_write(const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(port_fd, p, n);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                struct pollfd pf = {port_fd, POLLOUT, 0};
                poll(&pf, 1, 100);
                continue;
            }
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

/* ------------------------------------------------------------------ answers */

static char out[MAX_LINE + 1];
static size_t out_len;
static int out_overflow;

static void out_str(const char *s) {
    size_t n = strlen(s);
    if (out_len + n >= MAX_LINE - 6) {
        out_overflow = 1;
        return;
    }
    memcpy(out + out_len, s, n);
    out_len += n;
    out[out_len] = 0;
}

static void answer_begin(unsigned long rid, const char *head) {
    out_len = 0;
    out_overflow = 0;
    char tmp[32];
    snprintf(tmp, sizeof tmp, "@< %lu %s", rid, head);
    out_str(tmp);
}

static void answer_field(const char *k, const char *v) {
    out_str(" ");
    out_str(k);
    out_str("=");
    out_str(v);
}

static void answer_end(void) {
    char trailer[8];
    out_str(" ");
    snprintf(trailer, sizeof trailer, "*%04X\n", crc16((const uint8_t *)out, out_len));
    memcpy(out + out_len, trailer, 6); /* "*XXXX\n" without the NUL */
    out_len += 6;
    port_write(out, out_len);
}

static unsigned long cur_rid;

/* An error answer; msg is plain text without characters needing encoding except spaces. */
static int error(int code, const char *name, const char *msg) {
    char tmp[8], enc[256];
    size_t e = 0;
    snprintf(tmp, sizeof tmp, "ERR %d", code);
    answer_begin(cur_rid, tmp);
    answer_field("name", name);
    for (const char *m = msg; *m && e + 4 < sizeof enc; m++) {
        if (*m == ' ' || *m == '%' || *m == '*' || *m == '=' || *m == '@') {
            e += (size_t)snprintf(enc + e, 4, "%%%02X", (unsigned char)*m);
        } else {
            enc[e++] = *m;
        }
    }
    enc[e] = 0;
    if (e) answer_field("msg", enc);
    answer_end();
    return 0;
}

#define BAD_REQUEST(msg) (error(400, "BAD_REQUEST", msg))

/* ------------------------------------------------------------------ requests */

#define MAX_FIELDS 16
static char *fkey[MAX_FIELDS], *fval[MAX_FIELDS];
static int nfields;

static const char *field(const char *k) {
    for (int i = 0; i < nfields; i++)
        if (strcmp(fkey[i], k) == 0) return fval[i];
    return NULL;
}

static const char *state_name(void) {
    if (locked) return "locked";
    if (slots[OBJ_CERT].has_active && slots[OBJ_CHAIN].has_active) return "provisioned";
    if (has_key) return "keyed";
    return "blank";
}

static int obj_of(const char *name, int allow_csr) {
    if (!name) return -2;
    if (allow_csr && strcmp(name, "csr") == 0) return OBJ_COUNT;
    for (int i = 0; i < OBJ_COUNT; i++)
        if (strcmp(name, OBJ_NAME[i]) == 0) return i;
    return -1;
}

static int nonce_field(uint8_t *nonce, size_t *len) {
    const char *v = field("nonce");
    if (!v) return BAD_REQUEST("missing field nonce"), 0;
    long n = b64_decode(v, nonce, NONCE_MAX + 3);
    if (n < 0) return BAD_REQUEST("field nonce is not base64url"), 0;
    if (n < NONCE_MIN || n > NONCE_MAX) return BAD_REQUEST("nonce must be 16..64 bytes"), 0;
    *len = (size_t)n;
    return 1;
}

static int v_hello(void) {
    unsigned long proto;
    const char *p = field("proto");
    if (!p) return BAD_REQUEST("missing field proto");
    if (!parse_uint(p, &proto)) return BAD_REQUEST("field proto is not a number");
    if (proto != 1) { /* 426 carries the version the device speaks (4.1) */
        answer_begin(cur_rid, "ERR 426");
        answer_field("name", "UNSUPPORTED_VERSION");
        answer_field("msg", "device%20speaks%20proto%201");
        answer_field("proto", "1");
        answer_end();
        return 0;
    }
    answer_begin(cur_rid, "OK");
    answer_field("proto", "1");
    answer_field("maxline", "1024");
    answer_field("chunk", "512");
    answer_field("caps", CAPS);
    answer_end();
    return 0;
}

static int v_ident(void) {
    uint8_t h[32];
    char fwhash[65], uid[17], text[64];
    snprintf(text, sizeof text, "%s firmware %s", MODEL, FW);
    sha256((const uint8_t *)text, strlen(text), h);
    hex_encode(h, 32, fwhash);
    sha256((const uint8_t *)serial, strlen(serial), h); /* PLATFORM: the chip's unique id */
    hex_encode(h, 8, uid);
    answer_begin(cur_rid, "OK");
    answer_field("serial", serial); /* the serial alphabet needs no percent-encoding */
    answer_field("model", MODEL);
    answer_field("hw", HW);
    answer_field("fw", FW);
    answer_field("fwhash", fwhash);
    answer_field("uid", uid);
    answer_field("state", state_name());
    answer_end();
    return 0;
}

static int answer_key(int is_new) {
    static char pub[300];
    b64_encode(spki, spki_len, pub, sizeof pub);
    answer_begin(cur_rid, "OK");
    answer_field("alg", "p256");
    answer_field("pub", pub);
    answer_field("new", is_new ? "1" : "0");
    answer_end();
    return 0;
}

static int v_keygen(void) {
    const char *alg = field("alg"), *force = field("force");
    if (!alg) return BAD_REQUEST("missing field alg");
    /* This device makes P-256 keys only; a new key MUST be of the requested alg (4.3). */
    if (strcmp(alg, "p256") != 0 && strcmp(alg, "p384") != 0) return BAD_REQUEST("unknown alg");
    int f = 0;
    if (force) {
        if (strcmp(force, "1") == 0)
            f = 1;
        else if (strcmp(force, "0") != 0)
            return BAD_REQUEST("force must be 0 or 1");
    }
    if (has_key && !f) return answer_key(0);
    if (has_key && locked) return error(423, "LOCKED", "device is locked");
    if (strcmp(alg, "p256") != 0) return BAD_REQUEST("unsupported alg: this device makes p256 keys");
    int rc = key_generate();
    if (rc == 507) return error(507, "STORAGE", "could not persist the key");
    if (rc) return error(500, "INTERNAL", "key generation failed");
    answer_key(1);
    return 0;
}

static int v_csr(void) {
    uint8_t nonce[NONCE_MAX + 3], h[32];
    size_t n;
    char len[16], sha[48];
    if (!nonce_field(nonce, &n)) return 0;
    if (!has_key) return error(409, "BAD_STATE", "no key: send KEYGEN first");
    if (!csr_build(nonce, n)) return error(500, "INTERNAL", "CSR failed");
    sha256(csr, csr_len, h);
    b64_encode(h, 32, sha, sizeof sha);
    snprintf(len, sizeof len, "%zu", csr_len);
    answer_begin(cur_rid, "OK");
    answer_field("len", len);
    answer_field("sha256", sha);
    answer_end();
    return 0;
}

static int v_read(void) {
    const char *o = field("obj"), *off_s = field("off"), *max_s = field("max");
    unsigned long off, max;
    if (!o) return BAD_REQUEST("missing field obj");
    if (!off_s || !parse_uint(off_s, &off)) return BAD_REQUEST("field off is missing or not a number");
    if (!max_s || !parse_uint(max_s, &max)) return BAD_REQUEST("field max is missing or not a number");
    int obj = obj_of(o, 1);
    if (obj < 0) return BAD_REQUEST("unknown object");
    if (max == 0) return BAD_REQUEST("max must be at least 1");
    const uint8_t *data;
    size_t total;
    if (obj == OBJ_COUNT) {
        if (!csr_len) return error(404, "NOT_FOUND", "no csr on this device");
        data = csr;
        total = csr_len;
    } else {
        if (!slots[obj].has_active) return error(404, "NOT_FOUND", "no such object on this device");
        data = slots[obj].active;
        total = slots[obj].active_len;
    }
    if (off > total) return error(416, "BAD_OFFSET", "offset past the end");
    size_t n = total - off;
    if (n > max) n = max;
    if (n > CHUNK) n = CHUNK;
    static char b64[CHUNK * 4 / 3 + 8];
    char num[16];
    b64_encode(data + off, n, b64, sizeof b64);
    answer_begin(cur_rid, "OK");
    answer_field("obj", o);
    snprintf(num, sizeof num, "%lu", off);
    answer_field("off", num);
    snprintf(num, sizeof num, "%zu", total);
    answer_field("total", num);
    answer_field("data", b64);
    answer_end();
    return 0;
}

static int v_put(void) {
    const char *o = field("obj"), *off_s = field("off"), *d = field("data");
    unsigned long off;
    static uint8_t data[CHUNK + 8];
    if (!o) return BAD_REQUEST("missing field obj");
    int obj = obj_of(o, 0);
    if (obj < 0) return BAD_REQUEST("object cannot be written");
    if (!off_s || !parse_uint(off_s, &off)) return BAD_REQUEST("field off is missing or not a number");
    if (!d) return BAD_REQUEST("missing field data");
    long n = b64_decode(d, data, sizeof data);
    if (n < 0 && strlen(d) <= (CHUNK + 8) * 4 / 3) return BAD_REQUEST("field data is not base64url");
    if (locked) return error(423, "LOCKED", "device is locked");
    struct slot *s = &slots[obj];
    size_t have = s->has_staged ? s->staged_len : 0;
    if (off > have) return error(416, "BAD_OFFSET", "offset past the staged length");
    if (n < 0 || n > CHUNK) return error(413, "TOO_LARGE", "more than chunk bytes in one PUT");
    if (off + (size_t)n > SLOT_MAX) return error(413, "TOO_LARGE", "object exceeds the staging slot");
    memcpy(s->staged + off, data, (size_t)n);
    s->staged_len = off + (size_t)n;
    s->has_staged = 1;
    lock_token[0] = 0; /* staging invalidates a pending lock */
    char num[16];
    snprintf(num, sizeof num, "%zu", s->staged_len);
    answer_begin(cur_rid, "OK");
    answer_field("next", num);
    answer_end();
    return 0;
}

static int cert_matches_key(const uint8_t *der, size_t n) {
    mbedtls_x509_crt crt;
    static uint8_t buf[200];
    mbedtls_x509_crt_init(&crt);
    int ok = 0;
    if (der_element_len(der, n) == n && mbedtls_x509_crt_parse_der(&crt, der, n) == 0) {
        int k = mbedtls_pk_write_pubkey_der(&crt.pk, buf, sizeof buf);
        ok = k > 0 ? ((size_t)k == spki_len && memcmp(buf + sizeof buf - k, spki, spki_len) == 0 ? 1 : -1) : 0;
    }
    mbedtls_x509_crt_free(&crt);
    return ok;
}

static int is_cert_chain(const uint8_t *der, size_t n) {
    if (n == 0) return 0;
    while (n > 0) {
        size_t e = der_element_len(der, n);
        if (!e) return 0;
        mbedtls_x509_crt crt;
        mbedtls_x509_crt_init(&crt);
        int rc = mbedtls_x509_crt_parse_der(&crt, der, e);
        mbedtls_x509_crt_free(&crt);
        if (rc != 0) return 0;
        der += e;
        n -= e;
    }
    return 1;
}

static int v_commit(void) {
    const char *o = field("obj"), *len_s = field("len"), *sha_s = field("sha256");
    unsigned long len;
    uint8_t sha[40], h[32];
    if (!o) return BAD_REQUEST("missing field obj");
    int obj = obj_of(o, 0);
    if (obj < 0) return BAD_REQUEST("object cannot be written");
    if (!len_s || !parse_uint(len_s, &len)) return BAD_REQUEST("field len is missing or not a number");
    if (!sha_s || b64_decode(sha_s, sha, sizeof sha) != 32) return BAD_REQUEST("field sha256 is missing or not 32 bytes");
    if (locked) return error(423, "LOCKED", "device is locked");
    struct slot *s = &slots[obj];
    if (!s->has_staged) {
        /* A retried COMMIT whose answer was lost: already done. */
        if (s->has_active && s->active_len == len) {
            sha256(s->active, s->active_len, h);
            if (memcmp(h, sha, 32) == 0) goto ok;
        }
        return error(409, "BAD_STATE", "nothing staged: PUT first");
    }
    if (s->staged_len != len) return error(422, "VERIFY_FAILED", "staged length differs");
    sha256(s->staged, s->staged_len, h);
    if (memcmp(h, sha, 32) != 0) return error(422, "VERIFY_FAILED", "staged bytes do not match sha256");
    if (obj == OBJ_CERT) {
        if (!has_key) return error(409, "BAD_STATE", "no key: send KEYGEN first");
        int m = cert_matches_key(s->staged, s->staged_len);
        if (m == 0) return error(422, "VERIFY_FAILED", "certificate does not parse");
        if (m < 0) return error(422, "VERIFY_FAILED", "certificate key does not match device key");
    } else if (!is_cert_chain(s->staged, s->staged_len)) {
        return error(422, "VERIFY_FAILED", "not a sequence of DER certificates");
    }
    /* The swap: persisted atomically first, then active in RAM. */
    if (!store_write(OBJ_NAME[obj], s->staged, s->staged_len)) return error(507, "STORAGE", "flash write failed");
    memcpy(s->active, s->staged, s->staged_len);
    s->active_len = s->staged_len;
    s->has_active = 1;
    s->has_staged = 0;
    s->staged_len = 0;
    lock_token[0] = 0;
ok:
    answer_begin(cur_rid, "OK");
    answer_end();
    return 0;
}

static int v_prove(void) {
    uint8_t nonce[NONCE_MAX + 3], h[32], sig[MBEDTLS_ECDSA_MAX_LEN];
    static uint8_t msg[16 + 64 + 2 + NONCE_MAX];
    static char b64[MBEDTLS_ECDSA_MAX_LEN * 2];
    size_t n, m = 0, sig_len = 0;
    if (!nonce_field(nonce, &n)) return 0;
    if (!has_key) return error(409, "BAD_STATE", "no key: send KEYGEN first");
    /* M = "IMPRINT-POP-V1" 00 serial 00 nonce (protocol.md 4.8) */
    memcpy(msg, "IMPRINT-POP-V1", 14);
    m = 14;
    msg[m++] = 0;
    memcpy(msg + m, serial, strlen(serial));
    m += strlen(serial);
    msg[m++] = 0;
    memcpy(msg + m, nonce, n);
    m += n;
    sha256(msg, m, h);
    if (mbedtls_pk_sign(&key, MBEDTLS_MD_SHA256, h, 32, sig, &sig_len, mbedtls_ctr_drbg_random, &drbg) != 0)
        return error(500, "INTERNAL", "signing failed");
    b64_encode(sig, sig_len, b64, sizeof b64);
    answer_begin(cur_rid, "OK");
    answer_field("alg", "ecdsa-sha256");
    answer_field("sig", b64);
    answer_end();
    return 0;
}

static int v_lock(void) {
    const char *phase = field("phase");
    if (!phase) return BAD_REQUEST("missing field phase");
    if (strcmp(phase, "prepare") == 0) {
        uint8_t r[4];
        if (locked) return error(423, "LOCKED", "device is already locked");
        if (!slots[OBJ_CERT].has_active || !slots[OBJ_CHAIN].has_active)
            return error(409, "BAD_STATE", "certificate and chain must be committed first");
        if (!random_bytes(r, 4)) return error(500, "INTERNAL", "no randomness");
        hex_encode(r, 4, lock_token);
        answer_begin(cur_rid, "OK");
        answer_field("token", lock_token);
        answer_end();
    } else if (strcmp(phase, "commit") == 0) {
        const char *t = field("token");
        if (!t) return BAD_REQUEST("missing field token");
        if (locked) return error(423, "LOCKED", "device is already locked");
        if (!lock_token[0] || strcmp(t, lock_token) != 0) {
            lock_token[0] = 0; /* a wrong token invalidates the issued one (4.9) */
            return error(409, "BAD_STATE", "no such lock token: LOCK phase=prepare first");
        }
        lock_token[0] = 0;
        if (!store_write("locked", (const uint8_t *)"1", 1)) return error(507, "STORAGE", "flash write failed");
        locked = 1;
        answer_begin(cur_rid, "OK");
        answer_field("state", "locked");
        answer_end();
    } else {
        BAD_REQUEST("unknown phase");
    }
    return 0;
}

static int v_reset(void) {
    char *c = (char *)field("confirm");
    if (!c) return BAD_REQUEST("missing field confirm");
    if (locked) return error(423, "LOCKED", "device is locked; reset refused");
    pct_decode(c);
    if (strcmp(c, serial) != 0) return BAD_REQUEST("confirm must be the device serial");
    wipe_objects();
    store_remove("key.der");
    if (has_key) mbedtls_pk_free(&key);
    has_key = 0;
    answer_begin(cur_rid, "OK");
    answer_field("state", "blank");
    answer_end();
    return 0;
}

/* ------------------------------------------------------------------ framing */

/* Parse one line (without LF/CR) and answer it, or ignore it (2.5). */
static void handle_line(char *line, size_t len) {
    char *start = NULL;
    for (size_t i = 0; i + 1 < len; i++)
        if (line[i] == '@' && line[i + 1] == '>') start = line + i; /* the last marker wins */
    if (!start) return;                                              /* console */
    size_t n = len - (size_t)(start - line);
    /* trailer " *XXXX" */
    if (n < 8 || start[n - 6] != ' ' || start[n - 5] != '*') return;
    unsigned crc = 0;
    for (size_t i = n - 4; i < n; i++) {
        char ch = start[i];
        int v = (ch >= '0' && ch <= '9') ? ch - '0' : (ch >= 'A' && ch <= 'F') ? ch - 'A' + 10 : (ch >= 'a' && ch <= 'f') ? ch - 'a' + 10 : -1;
        if (v < 0) return;
        crc = crc * 16 + (unsigned)v;
    }
    if (crc16((const uint8_t *)start, n - 5) != crc) return; /* corrupt: ignore */
    start[n - 6] = 0;
    for (char *p = start; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7E || *p == '*') return; /* ASCII only, no '*' */
    /* tokens: marker, rid, verb, words..., fields... */
    char *tok[3 + MAX_FIELDS + 4];
    int nt = 0;
    for (char *p = strtok(start, " "); p && nt < (int)(sizeof tok / sizeof tok[0]); p = strtok(NULL, " ")) tok[nt++] = p;
    if (nt < 3) return;
    unsigned long rid;
    if (!parse_uint(tok[1], &rid) || rid == 0 || rid > 65535 || strlen(tok[1]) > 5) return; /* grammar: ignore */
    for (char *p = tok[2]; *p; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_')) return;
    nfields = 0;
    for (int i = 3; i < nt; i++) {
        char *eq = strchr(tok[i], '=');
        if (!eq) {
            if (nfields) return; /* a word after fields */
            continue;            /* positional words are ignored */
        }
        *eq = 0;
        for (char *k = tok[i]; *k; k++)
            if (!((*k >= 'a' && *k <= 'z') || (*k >= '0' && *k <= '9') || *k == '_')) return;
        if (!*tok[i]) return;
        if (nfields < MAX_FIELDS) {
            fkey[nfields] = tok[i];
            fval[nfields] = eq + 1;
            nfields++;
        }
    }
    cur_rid = rid;
    const char *verb = tok[2];
    if (!strcmp(verb, "HELLO")) v_hello();
    else if (!strcmp(verb, "IDENT")) v_ident();
    else if (!strcmp(verb, "KEYGEN")) v_keygen();
    else if (!strcmp(verb, "CSR")) v_csr();
    else if (!strcmp(verb, "READ")) v_read();
    else if (!strcmp(verb, "PUT")) v_put();
    else if (!strcmp(verb, "COMMIT")) v_commit();
    else if (!strcmp(verb, "PROVE")) v_prove();
    else if (!strcmp(verb, "LOCK")) v_lock();
    else if (!strcmp(verb, "RESET")) v_reset();
    else (void)error(405, "UNKNOWN_VERB", "unknown verb");
}

static char line[MAX_LINE];
static size_t line_len;
static int discarding;

static void feed(const char *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        char b = p[i];
        if (discarding) {
            if (b == '\n') discarding = 0;
            continue;
        }
        if (b == '\n') {
            size_t l = line_len;
            if (l > 0 && line[l - 1] == '\r') l--;
            line[l] = 0;
            handle_line(line, l);
            line_len = 0;
            continue;
        }
        if (line_len + 1 >= MAX_LINE) { /* the line plus its LF would exceed 1024 bytes */
            discarding = 1;
            line_len = 0;
            continue;
        }
        line[line_len++] = b;
    }
}

static void load_state(void) {
    has_key = key_load();
    for (int i = 0; i < OBJ_COUNT; i++) {
        long n = store_read(OBJ_NAME[i], slots[i].active, SLOT_MAX);
        slots[i].has_active = n > 0;
        slots[i].active_len = n > 0 ? (size_t)n : 0;
    }
    uint8_t l;
    locked = store_read("locked", &l, 1) == 1;
}

int main(int argc, char **argv) {
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--serial")) snprintf(serial, sizeof serial, "%s", argv[i + 1]);
        else if (!strcmp(argv[i], "--state-dir")) state_dir = argv[i + 1];
    }
    if (!serial[0] || !state_dir) {
        fprintf(stderr, "usage: %s --serial SERIAL --state-dir DIR\n", argv[0]);
        return 2;
    }
    /* PLATFORM: entropy. A board seeds from its TRNG. */
    mbedtls_entropy_init(&entropy);
    mbedtls_ctr_drbg_init(&drbg);
    if (mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &entropy, (const unsigned char *)serial, strlen(serial)) != 0) {
        fprintf(stderr, "no randomness\n");
        return 1;
    }
    load_state();

    /* PLATFORM: the serial port. Here a pseudo-terminal; the slave stays open so the host may close and reopen it. */
    port_fd = posix_openpt(O_RDWR | O_NOCTTY);
    if (port_fd < 0 || grantpt(port_fd) != 0 || unlockpt(port_fd) != 0) return perror("pty"), 1;
    const char *slave_path = ptsname(port_fd);
    int slave = open(slave_path, O_RDWR | O_NOCTTY);
    struct termios t;
    if (slave < 0 || tcgetattr(slave, &t) != 0) return perror("pty slave"), 1;
    cfmakeraw(&t);
    tcsetattr(slave, TCSANOW, &t);
    printf("DEVICE %s %s\n", serial, slave_path);
    fflush(stdout);

    char buf[256];
    for (;;) {
        ssize_t n = read(port_fd, buf, sizeof buf);
        if (n > 0) feed(buf, (size_t)n);
        else if (n < 0 && errno != EINTR && errno != EAGAIN) return 0;
    }
}
