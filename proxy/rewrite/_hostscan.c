/* The hot loop of host rewriting, compiled: find the anchors, look each hit up in the memo of
 * decisions, copy the bytes between edits. Nothing here decides what a mention means: every hit
 * the memo does not know is handed back to Python (Matcher._miss in hosts.py), which decides it
 * and fills the memo. So the rules live in one place, and this file only makes known hits cheap.
 *
 * What the memo is keyed by: a decision (hosts.Matcher.decide) reports the bytes it read, a few
 * before the host (the scheme, the slashes in their escaped or encoded forms, one byte of word
 * boundary) and a few after it (a port, a dot). Python files the decision under exactly those
 * bytes and their *shape*: where they start (so many bytes before the host run, or before the
 * anchor) and end (so many bytes after the anchor). For each hit this loop tries the shapes its
 * memo has seen, most used first, and any entry whose bytes match is the decision Python would
 * make, since Python read nothing else. Bytes the rules never look at (the attribute name, the
 * rest of the URL, a query) are in no key, so the same form of the same host is one entry however
 * many pages and contexts it appears in.
 *
 * Python's ``re``/``bytes.split`` search plus a dict lookup per hit costs about 1 us per mention;
 * this loop costs a few tens of nanoseconds per mention and one pass per anchor (16 or 32 bytes a
 * step with SSE2 or AVX2, memchr elsewhere). The pure-Python matcher remains the reference:
 * tests/test_rewrite_accel.py compares the two, tests/test_rewrite_accel_contract.py holds this
 * file to its contract, and scripts/sanitize.sh runs both under AddressSanitizer and UBSan.
 *
 * Module ``proxy.rewrite._hostscan``:
 *   Memo()       a bounded cache of Edits (rel_start, rel_end, replacement or None) by shape and
 *                bytes, that may forget (see MAX_PROBE; hosts.py empties it at MEMO_LIMIT):
 *                store(key, left, right, at_anchor, edit), find(key, left, right, at_anchor),
 *                shapes(), len, clear.
 *   rewrite(buf, base, limit, specs, miss) -> (bytes, cut)
 *                specs: tuple of (anchor: bytes, memo: Memo)
 *                miss(i, index) -> Edit or None, for hits no memo knows.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define HAVE_AVX2_PATH 1
static int have_avx2 = 0; /* set at import from the CPU's feature bits */
#endif

/* ------------------------------------------------------------------------------------------ */
/* Memo */

/* SECURITY: keys are bytes of vendor pages. The hash is seeded at import from os.urandom, and a
 * probe never runs longer than MAX_PROBE slots (an entry that finds no room replaces one), so no
 * page can be crafted to make a lookup slow: the memo is a cache and may forget. */
#define MAX_PROBE 16
#define MIN_SLOTS 64

static uint64_t hash_seed = 0x243f6a8885a308d3ULL;

static inline uint64_t
rotl64(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

static inline uint64_t
hash_key(const unsigned char *p, Py_ssize_t len)
{
    const uint64_t k = 0x9e3779b97f4a7c15ULL;
    uint64_t h = hash_seed ^ ((uint64_t)len * k);
    uint64_t w;
    Py_ssize_t i = 0;
    for (; i + 8 <= len; i += 8) {
        memcpy(&w, p + i, 8);
        h = rotl64((h ^ w) * k, 31) * 0xbf58476d1ce4e5b9ULL;
    }
    if (i < len) {
        if (len >= 8) {
            memcpy(&w, p + len - 8, 8); /* the last 8 bytes, overlapping: the length is in h */
        }
        else {
            w = 0;
            memcpy(&w, p, (size_t)len);
        }
        h = rotl64((h ^ w) * k, 31) * 0xbf58476d1ce4e5b9ULL;
    }
    h ^= h >> 32;
    h *= 0x94d049bb133111ebULL;
    h ^= h >> 29;
    return h;
}

/* A shape says which bytes around a hit make its key: from ``left`` bytes before the start of the
 * host run (or, with at_anchor, before the anchor itself: a decision that never looked left of
 * the anchor, such as "vendor.community is another name") to ``right`` bytes after the anchor.
 * Packed into one number so an entry compares it with one instruction. */
#define MAX_LEFT 1024  /* far more than any decision reads (about 30 bytes); bounds the sums */
#define MAX_RIGHT 1024
#define MAX_SHAPES 32  /* distinct shapes a memo tries per hit; further ones are not remembered */
/* The longest host run looked through to find where it starts: hosts.py's MAX_HOST + 6. A longer
 * run is never a host, and its hits always go to Python. */
#define MAX_RUN 259

typedef int64_t Shape;

static inline Shape
shape_of(Py_ssize_t left, Py_ssize_t right, int at_anchor)
{
    return (((Shape)left * (MAX_RIGHT + 1) + right) << 1) | (at_anchor ? 1 : 0);
}

typedef struct {
    uint64_t hash;
    Shape shape;
    PyObject *key;   /* bytes, or NULL for an empty slot */
    PyObject *value; /* the Edit tuple as given */
    Py_ssize_t rel_start;
    Py_ssize_t rel_end;
    PyObject *repl;  /* borrowed from value: bytes, or NULL for "leave as is" */
} Entry;

typedef struct {
    Py_ssize_t left, right;
    int at_anchor;
    Shape shape;
    uint64_t uses;
} ShapeInfo;

typedef struct {
    PyObject_HEAD
    Entry *slots;
    Py_ssize_t mask;
    Py_ssize_t used;
    ShapeInfo shapes[MAX_SHAPES]; /* the shapes of the entries, most used first (roughly) */
    Py_ssize_t nshapes;
} MemoObject;

static PyTypeObject MemoType;

static inline uint64_t
hash_entry(const unsigned char *p, Py_ssize_t len, Shape shape)
{
    return hash_key(p, len) ^ ((uint64_t)shape * 0xd6e8feb86659fd93ULL);
}

static int
memo_alloc(MemoObject *self, Py_ssize_t nslots)
{
    Entry *slots = PyMem_Calloc((size_t)nslots, sizeof(Entry));
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->slots = slots;
    self->mask = nslots - 1;
    self->used = 0;
    return 0;
}

static void
memo_release(Entry *slots, Py_ssize_t nslots)
{
    for (Py_ssize_t i = 0; i < nslots; i++) {
        Py_XDECREF(slots[i].key);
        Py_XDECREF(slots[i].value);
    }
    PyMem_Free(slots);
}

static PyObject *
memo_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    if (PyTuple_GET_SIZE(args) != 0 || (kwds != NULL && PyDict_GET_SIZE(kwds) != 0)) {
        PyErr_SetString(PyExc_TypeError, "Memo() takes no arguments");
        return NULL;
    }
    MemoObject *self = (MemoObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->nshapes = 0;
    if (memo_alloc(self, MIN_SLOTS) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static void
memo_dealloc(MemoObject *self)
{
    if (self->slots != NULL) {
        memo_release(self->slots, self->mask + 1);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The entry holding these bytes under this shape, or NULL. */
static inline Entry *
memo_find(MemoObject *self, const unsigned char *key, Py_ssize_t len, Shape shape, uint64_t h)
{
    Py_ssize_t mask = self->mask;
    for (Py_ssize_t probe = 0; probe < MAX_PROBE; probe++) {
        Entry *e = &self->slots[(Py_ssize_t)((h + (uint64_t)probe) & (uint64_t)mask)];
        if (e->key == NULL) {
            return NULL;
        }
        if (e->hash == h && e->shape == shape && PyBytes_GET_SIZE(e->key) == len &&
            memcmp(PyBytes_AS_STRING(e->key), key, (size_t)len) == 0) {
            return e;
        }
    }
    return NULL;
}

/* Checks that value is an Edit: (int, int, bytes or None). */
static int
edit_parts(PyObject *value, Py_ssize_t *rel_start, Py_ssize_t *rel_end, PyObject **repl)
{
    if (!PyTuple_CheckExact(value) || PyTuple_GET_SIZE(value) != 3) {
        PyErr_SetString(PyExc_TypeError, "an edit is a tuple (rel_start, rel_end, bytes or None)");
        return -1;
    }
    PyObject *r = PyTuple_GET_ITEM(value, 2);
    if (r != Py_None && !PyBytes_CheckExact(r)) {
        PyErr_SetString(PyExc_TypeError, "an edit's replacement is bytes or None");
        return -1;
    }
    Py_ssize_t s = PyLong_AsSsize_t(PyTuple_GET_ITEM(value, 0));
    if (s == -1 && PyErr_Occurred()) {
        return -1;
    }
    Py_ssize_t t = PyLong_AsSsize_t(PyTuple_GET_ITEM(value, 1));
    if (t == -1 && PyErr_Occurred()) {
        return -1;
    }
    *rel_start = s;
    *rel_end = t;
    *repl = r == Py_None ? NULL : r;
    return 0;
}

static int
memo_grow(MemoObject *self)
{
    Entry *old = self->slots;
    Py_ssize_t oldn = self->mask + 1;
    if (memo_alloc(self, oldn * 2) < 0) {
        self->slots = old;
        self->mask = oldn - 1;
        return -1;
    }
    for (Py_ssize_t i = 0; i < oldn; i++) {
        Entry *src = &old[i];
        if (src->key == NULL) {
            continue;
        }
        Entry *dst = NULL;
        for (Py_ssize_t probe = 0; probe < MAX_PROBE; probe++) {
            Entry *e = &self->slots[(Py_ssize_t)((src->hash + (uint64_t)probe) & (uint64_t)self->mask)];
            if (e->key == NULL) {
                dst = e;
                break;
            }
        }
        if (dst == NULL) { /* no room within the probe bound: the cache forgets this one */
            Py_DECREF(src->key);
            Py_DECREF(src->value);
            continue;
        }
        *dst = *src;
        self->used++;
    }
    PyMem_Free(old);
    return 0;
}

/* Parses (key, left, right, at_anchor) at the start of args. */
static int
shape_args(PyObject *const *args, PyObject **key, Py_ssize_t *left, Py_ssize_t *right, int *at_anchor)
{
    if (!PyBytes_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "memo keys are bytes");
        return -1;
    }
    *key = args[0];
    *left = PyLong_AsSsize_t(args[1]);
    if (*left == -1 && PyErr_Occurred()) {
        return -1;
    }
    *right = PyLong_AsSsize_t(args[2]);
    if (*right == -1 && PyErr_Occurred()) {
        return -1;
    }
    *at_anchor = PyObject_IsTrue(args[3]);
    if (*at_anchor < 0) {
        return -1;
    }
    /* SECURITY: bounded, so the loop's sums (hit position plus or minus a shape) never overflow. */
    if (*left < 0 || *left > MAX_LEFT || *right < 0 || *right > MAX_RIGHT) {
        PyErr_SetString(PyExc_ValueError, "shape out of range");
        return -1;
    }
    return 0;
}

static PyObject *
memo_store(MemoObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "store(key, left, right, at_anchor, edit)");
        return NULL;
    }
    PyObject *key, *value = args[4];
    Py_ssize_t left, right, rel_start, rel_end;
    int at_anchor;
    PyObject *repl;
    if (shape_args(args, &key, &left, &right, &at_anchor) < 0 ||
        edit_parts(value, &rel_start, &rel_end, &repl) < 0) {
        return NULL;
    }
    Shape shape = shape_of(left, right, at_anchor);
    Py_ssize_t known = 0;
    while (known < self->nshapes && self->shapes[known].shape != shape) {
        known++;
    }
    if (known == self->nshapes) {
        if (self->nshapes == MAX_SHAPES) {
            Py_RETURN_FALSE; /* a shape this memo will never try: not worth a slot */
        }
        ShapeInfo *info = &self->shapes[self->nshapes++];
        info->left = left;
        info->right = right;
        info->at_anchor = at_anchor;
        info->shape = shape;
        info->uses = 0;
    }
    if ((self->used + 1) * 2 > self->mask + 1 && memo_grow(self) < 0) {
        return NULL;
    }
    const unsigned char *k = (const unsigned char *)PyBytes_AS_STRING(key);
    Py_ssize_t len = PyBytes_GET_SIZE(key);
    uint64_t h = hash_entry(k, len, shape);
    Entry *slot = NULL;
    for (Py_ssize_t probe = 0; probe < MAX_PROBE; probe++) {
        Entry *e = &self->slots[(Py_ssize_t)((h + (uint64_t)probe) & (uint64_t)self->mask)];
        if (e->key == NULL || (e->hash == h && e->shape == shape && PyBytes_GET_SIZE(e->key) == len &&
                               memcmp(PyBytes_AS_STRING(e->key), k, (size_t)len) == 0)) {
            slot = e;
            break;
        }
    }
    if (slot == NULL) {
        slot = &self->slots[(Py_ssize_t)(h & (uint64_t)self->mask)]; /* replace: see MAX_PROBE */
    }
    if (slot->key == NULL) {
        self->used++;
    }
    PyObject *old_key = slot->key, *old_value = slot->value;
    Py_INCREF(key);
    Py_INCREF(value);
    slot->hash = h;
    slot->shape = shape;
    slot->key = key;
    slot->value = value;
    slot->rel_start = rel_start;
    slot->rel_end = rel_end;
    slot->repl = repl;
    Py_XDECREF(old_key);
    Py_XDECREF(old_value);
    Py_RETURN_TRUE;
}

static PyObject *
memo_find_method(MemoObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "find(key, left, right, at_anchor)");
        return NULL;
    }
    PyObject *key;
    Py_ssize_t left, right;
    int at_anchor;
    if (shape_args(args, &key, &left, &right, &at_anchor) < 0) {
        return NULL;
    }
    Shape shape = shape_of(left, right, at_anchor);
    const unsigned char *k = (const unsigned char *)PyBytes_AS_STRING(key);
    Py_ssize_t len = PyBytes_GET_SIZE(key);
    Entry *e = memo_find(self, k, len, shape, hash_entry(k, len, shape));
    return Py_NewRef(e == NULL ? Py_None : e->value);
}

static PyObject *
memo_shapes(MemoObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *out = PyList_New(self->nshapes);
    if (out == NULL) {
        return NULL;
    }
    for (Py_ssize_t s = 0; s < self->nshapes; s++) {
        ShapeInfo *info = &self->shapes[s];
        PyObject *item = Py_BuildValue("(nnO)", info->left, info->right, info->at_anchor ? Py_True : Py_False);
        if (item == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, s, item);
    }
    return out;
}

static Py_ssize_t
memo_length(MemoObject *self)
{
    return self->used;
}

static PyObject *
memo_clear(MemoObject *self, PyObject *Py_UNUSED(ignored))
{
    Entry *old = self->slots;
    Py_ssize_t oldn = self->mask + 1;
    if (memo_alloc(self, MIN_SLOTS) < 0) {
        self->slots = old;
        self->mask = oldn - 1;
        return NULL;
    }
    memo_release(old, oldn);
    self->nshapes = 0;
    Py_RETURN_NONE;
}

static PyMethodDef memo_methods[] = {
    {"store", (PyCFunction)(void (*)(void))memo_store, METH_FASTCALL,
     "store(key, left, right, at_anchor, edit) -> bool: file an edit (False: too many shapes)"},
    {"find", (PyCFunction)(void (*)(void))memo_find_method, METH_FASTCALL,
     "find(key, left, right, at_anchor) -> edit or None"},
    {"shapes", (PyCFunction)memo_shapes, METH_NOARGS, "The shapes tried, in order: (left, right, at_anchor)."},
    {"clear", (PyCFunction)memo_clear, METH_NOARGS, "Forget every entry and shape."},
    {NULL, NULL, 0, NULL},
};

static PyMappingMethods memo_as_mapping = {
    .mp_length = (lenfunc)memo_length,
};

static PyTypeObject MemoType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "proxy.rewrite._hostscan.Memo",
    .tp_doc = "A bounded cache of rewrite decisions keyed by the bytes they read around a hit.",
    .tp_basicsize = sizeof(MemoObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = memo_new,
    .tp_dealloc = (destructor)memo_dealloc,
    .tp_methods = memo_methods,
    .tp_as_mapping = &memo_as_mapping,
};

/* ------------------------------------------------------------------------------------------ */
/* Finding the anchors */

typedef struct {
    Py_ssize_t pos;   /* where the anchor starts */
    Py_ssize_t index; /* which anchor */
    Py_ssize_t run;   /* where the host run ending at the hit starts; -1: unknown (see run_start) */
    uint64_t hash;    /* of its key under ``shape``, when hashed */
    Shape shape;
    int hashed;
} Hit;

typedef struct {
    Hit *items;
    Py_ssize_t len;
    Py_ssize_t cap;
} Hits;

static int
hits_push(Hits *hits, Py_ssize_t pos, Py_ssize_t index)
{
    if (hits->len == hits->cap) {
        Py_ssize_t cap = hits->cap ? hits->cap * 2 : 256;
        Hit *items = PyMem_Realloc(hits->items, (size_t)cap * sizeof(Hit));
        if (items == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        hits->items = items;
        hits->cap = cap;
    }
    hits->items[hits->len].pos = pos;
    hits->items[hits->len].index = index;
    hits->items[hits->len].hashed = 0;
    hits->items[hits->len].run = -1;
    hits->len++;
    return 0;
}

static inline unsigned char
lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

/* True when the anchor (lower-case) is at buf without regard to ASCII case. */
static inline int
anchor_at(const unsigned char *buf, const unsigned char *anchor, Py_ssize_t m)
{
    for (Py_ssize_t j = 0; j < m; j++) {
        if (lower(buf[j]) != anchor[j]) {
            return 0;
        }
    }
    return 1;
}

#if defined(__SSE2__)
typedef struct {
    const unsigned char *anchor;
    Py_ssize_t m, k, k2; /* length; the positions of the two bytes compared sixteen at a time */
    Py_ssize_t index;
    Hits *hits;
    Py_ssize_t from; /* no hit starts before this (hits do not overlap) */
} Search;

/* The candidates of one block (bit j of mask: a start at i + j); -1 on error. */
static inline int
take(Search *s, const unsigned char *buf, Py_ssize_t n, Py_ssize_t i, unsigned int mask)
{
    while (mask != 0) {
        Py_ssize_t c = i + __builtin_ctz(mask);
        mask &= mask - 1;
        if (c < s->from || c + s->m > n) {
            continue; /* inside the previous hit, or too near the end to be one */
        }
        if (anchor_at(buf + c, s->anchor, s->m)) {
            if (hits_push(s->hits, c, s->index) < 0) {
                return -1;
            }
            s->from = c + s->m;
        }
    }
    return 0;
}

/* Both scans return the first start not looked at yet, or -1 on error. */
static Py_ssize_t
scan_sse2(Search *s, const unsigned char *buf, Py_ssize_t n)
{
    unsigned char c2 = s->anchor[s->k2];
    const __m128i v_pivot = _mm_set1_epi8((char)s->anchor[s->k]);
    const __m128i v_c2 = _mm_set1_epi8((char)c2);
    const __m128i v_fold = _mm_set1_epi8((c2 >= 'a' && c2 <= 'z') ? 0x20 : 0);
    Py_ssize_t reach = (s->k > s->k2 ? s->k : s->k2) + 16;
    Py_ssize_t i = 0;
    for (; i + reach <= n; i += 16) {
        __m128i a = _mm_loadu_si128((const __m128i *)(buf + i + s->k));
        __m128i b = _mm_loadu_si128((const __m128i *)(buf + i + s->k2));
        unsigned int mask = (unsigned int)_mm_movemask_epi8(
            _mm_and_si128(_mm_cmpeq_epi8(a, v_pivot), _mm_cmpeq_epi8(_mm_or_si128(b, v_fold), v_c2)));
        if (mask != 0 && take(s, buf, n, i, mask) < 0) {
            return -1;
        }
    }
    return i;
}

#if defined(HAVE_AVX2_PATH)
__attribute__((target("avx2"))) static Py_ssize_t
scan_avx2(Search *s, const unsigned char *buf, Py_ssize_t n)
{
    unsigned char c2 = s->anchor[s->k2];
    const __m256i v_pivot = _mm256_set1_epi8((char)s->anchor[s->k]);
    const __m256i v_c2 = _mm256_set1_epi8((char)c2);
    const __m256i v_fold = _mm256_set1_epi8((c2 >= 'a' && c2 <= 'z') ? 0x20 : 0);
    Py_ssize_t reach = (s->k > s->k2 ? s->k : s->k2) + 32;
    Py_ssize_t i = 0;
    for (; i + reach <= n; i += 32) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(buf + i + s->k));
        __m256i b = _mm256_loadu_si256((const __m256i *)(buf + i + s->k2));
        unsigned int mask = (unsigned int)_mm256_movemask_epi8(_mm256_and_si256(
            _mm256_cmpeq_epi8(a, v_pivot), _mm256_cmpeq_epi8(_mm256_or_si256(b, v_fold), v_c2)));
        if (mask != 0 && take(s, buf, n, i, mask) < 0) {
            return -1;
        }
    }
    return i;
}
#endif
#endif

/* Every occurrence of ``anchor`` (lower-case) in ``buf`` without regard to ASCII case, left to
 * right and not overlapping: the hits ``buf.lower().split(anchor)`` splits at. */
static int
find_anchor(const unsigned char *buf, Py_ssize_t n, const unsigned char *anchor, Py_ssize_t m,
            Py_ssize_t index, Hits *hits)
{
    if (m == 0 || m > n) {
        return 0;
    }
    /* Search for the first byte that has no upper-case form (the "." of "vendor.com"), and each
     * candidate is then compared whole. */
    Py_ssize_t k = 0;
    while (k < m && anchor[k] >= 'a' && anchor[k] <= 'z') {
        k++;
    }
    Py_ssize_t from = 0;
    if (k < m) {
        unsigned char pivot = anchor[k];
#if defined(__SSE2__)
        if (m >= 2) {
            /* Sixteen (or 32) candidate starts at a time, filtered on two bytes: the pivot and
             * its neighbour (case folded when it is a letter). A "." alone is common in a page;
             * ".t" or ".c" far less, so few candidates reach the whole comparison. */
            Search search = {anchor, m, k, k + 1 < m ? k + 1 : k - 1, index, hits, 0};
            Py_ssize_t i;
#if defined(HAVE_AVX2_PATH)
            i = have_avx2 ? scan_avx2(&search, buf, n) : scan_sse2(&search, buf, n);
#else
            i = scan_sse2(&search, buf, n);
#endif
            if (i < 0) {
                return -1;
            }
            from = search.from > i ? search.from : i; /* every start before i has been looked at */
        }
#endif
        while (from + m <= n) {
            const unsigned char *p = memchr(buf + from + k, pivot, (size_t)(n - m - from + 1));
            if (p == NULL) {
                break;
            }
            Py_ssize_t i = (p - buf) - k;
            if (anchor_at(buf + i, anchor, m)) {
                if (hits_push(hits, i, index) < 0) {
                    return -1;
                }
                from = i + m;
            }
            else {
                from = i + 1;
            }
        }
        return 0;
    }
    /* Letters only ("localhost"): compare at every position where the first letter is. */
    for (Py_ssize_t i = 0; i + m <= n;) {
        if (anchor_at(buf + i, anchor, m)) {
            if (hits_push(hits, i, index) < 0) {
                return -1;
            }
            i += m;
        }
        else {
            i++;
        }
    }
    return 0;
}

static int
hit_order(const void *a, const void *b)
{
    Py_ssize_t x = ((const Hit *)a)->pos, y = ((const Hit *)b)->pos;
    return (x > y) - (x < y);
}

/* ------------------------------------------------------------------------------------------ */
/* rewrite */

typedef struct {
    Py_ssize_t start;
    Py_ssize_t end;
    PyObject *repl; /* a new reference */
} Edit;

typedef struct {
    const unsigned char *anchor;
    Py_ssize_t m;
    MemoObject *memo;
} Spec;

#define MAX_SPECS 64

#if defined(__GNUC__) || defined(__clang__)
#define PREFETCH(p) __builtin_prefetch(p)
#else
#define PREFETCH(p) ((void)(p))
#endif
/* How many hits ahead the memo slot of a hit is fetched: a page's memo does not stay in the
 * cache between responses, and waiting for each slot in turn is most of the cost of a hit. */
#define AHEAD 8

/* Bytes of a host run (hosts._RUN_BYTES, either case). */
static unsigned char run_byte[256];

/* The start of the host run that ends at ``i``, or -1 when no key can be placed on it: the run
 * reaches the start of the buffer (the decision then depends on where the buffer starts) or is
 * longer than any host (decided in Python, never memoised). */
static inline Py_ssize_t
run_start(const unsigned char *buf, Py_ssize_t i)
{
    Py_ssize_t rs = i;
    while (rs > 0 && i - rs < MAX_RUN && run_byte[buf[rs - 1]]) {
        rs--;
    }
    return (rs > 0 && i - rs < MAX_RUN) ? rs : -1;
}

/* Where the key of a hit at ``i`` (host run from ``rs``) starts and ends under a shape; 0 if it
 * does not fit in the buffer. */
static inline int
key_span(const ShapeInfo *info, Py_ssize_t i, Py_ssize_t rs, Py_ssize_t m, Py_ssize_t n,
         Py_ssize_t *from, Py_ssize_t *to)
{
    if (!info->at_anchor && rs < 0) {
        return 0;
    }
    Py_ssize_t a = (info->at_anchor ? i : rs) - info->left;
    Py_ssize_t b = i + m + info->right;
    if (a < 0 || b > n) {
        return 0;
    }
    *from = a;
    *to = b;
    return 1;
}

/* Finds the hit's run, hashes its key under the memo's most used shape and asks for the slot; at
 * half the distance (key_ahead), asks for the key object the slot points to. */
static inline void
hash_ahead(Hit *hit, const Spec *specs, const unsigned char *buf, Py_ssize_t n)
{
    const Spec *spec = &specs[hit->index];
    MemoObject *memo = spec->memo;
    hit->run = run_start(buf, hit->pos);
    if (memo->nshapes == 0) {
        return;
    }
    Py_ssize_t from, to;
    if (key_span(&memo->shapes[0], hit->pos, hit->run, spec->m, n, &from, &to)) {
        hit->shape = memo->shapes[0].shape;
        hit->hash = hash_entry(buf + from, to - from, hit->shape);
        hit->hashed = 1;
        PREFETCH(&memo->slots[hit->hash & (uint64_t)memo->mask]);
    }
}

static inline void
key_ahead(const Hit *hit, const Spec *specs)
{
    if (hit->hashed) {
        const MemoObject *memo = specs[hit->index].memo;
        const Entry *e = &memo->slots[hit->hash & (uint64_t)memo->mask];
        if (e->key != NULL && e->hash == hit->hash) {
            PREFETCH(PyBytes_AS_STRING(e->key));
        }
    }
}

/* The memo's entry for a hit: under the prefetched shape first, then every other shape, most used
 * first. An entry found under any shape is right: its decision read only the bytes of its key. */
static inline Entry *
lookup(const Hit *hit, const Spec *spec, const unsigned char *buf, Py_ssize_t n)
{
    MemoObject *memo = spec->memo;
    Py_ssize_t i = hit->pos, m = spec->m, from, to;
    Entry *found = NULL;
    Py_ssize_t s = 0;
    if (hit->hashed) {
        for (; s < memo->nshapes && memo->shapes[s].shape != hit->shape; s++) {
        }
        if (s < memo->nshapes && key_span(&memo->shapes[s], i, hit->run, m, n, &from, &to)) {
            found = memo_find(memo, buf + from, to - from, hit->shape, hit->hash);
        }
    }
    if (found == NULL) {
        for (s = 0; s < memo->nshapes; s++) {
            ShapeInfo *info = &memo->shapes[s];
            if ((hit->hashed && info->shape == hit->shape) || !key_span(info, i, hit->run, m, n, &from, &to)) {
                continue;
            }
            found = memo_find(memo, buf + from, to - from, info->shape,
                              hash_entry(buf + from, to - from, info->shape));
            if (found != NULL) {
                break;
            }
        }
        if (found == NULL) {
            return NULL;
        }
    }
    /* Keep the shapes roughly in order of use: a shape used more than the one before it moves up. */
    if (s < memo->nshapes) {
        memo->shapes[s].uses++;
        if (s > 0 && memo->shapes[s].uses > memo->shapes[s - 1].uses) {
            ShapeInfo t = memo->shapes[s];
            memo->shapes[s] = memo->shapes[s - 1];
            memo->shapes[s - 1] = t;
        }
    }
    return found;
}

static PyObject *
hostscan_rewrite(PyObject *module, PyObject *args)
{
    PyObject *buf_obj, *specs_obj, *miss;
    Py_ssize_t base, limit;
    if (!PyArg_ParseTuple(args, "SnnO!O:rewrite", &buf_obj, &base, &limit, &PyTuple_Type, &specs_obj, &miss)) {
        return NULL;
    }
    const unsigned char *buf = (const unsigned char *)PyBytes_AS_STRING(buf_obj);
    Py_ssize_t n = PyBytes_GET_SIZE(buf_obj);
    if (base < 0 || base > n || limit > n || limit <= base) {
        PyErr_SetString(PyExc_ValueError, "need 0 <= base < limit <= len(buf)");
        return NULL;
    }
    Py_ssize_t nspecs = PyTuple_GET_SIZE(specs_obj);
    if (nspecs > MAX_SPECS) {
        PyErr_SetString(PyExc_ValueError, "too many anchors");
        return NULL;
    }
    Spec specs[MAX_SPECS];
    for (Py_ssize_t s = 0; s < nspecs; s++) {
        PyObject *anchor, *memo;
        if (!PyTuple_Check(PyTuple_GET_ITEM(specs_obj, s))) {
            PyErr_SetString(PyExc_TypeError, "each spec is a tuple (anchor, memo)");
            return NULL;
        }
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(specs_obj, s), "SO!:spec", &anchor, &MemoType, &memo)) {
            return NULL;
        }
        specs[s].anchor = (const unsigned char *)PyBytes_AS_STRING(anchor);
        specs[s].m = PyBytes_GET_SIZE(anchor);
        specs[s].memo = (MemoObject *)memo;
    }

    Hits hits = {NULL, 0, 0};
    Edit *edits = NULL;
    Py_ssize_t nedits = 0, capedits = 0;
    PyObject *result = NULL;

    for (Py_ssize_t s = 0; s < nspecs; s++) {
        if (find_anchor(buf, n, specs[s].anchor, specs[s].m, s, &hits) < 0) {
            goto done;
        }
    }
    if (nspecs > 1 && hits.len > 1) {
        /* Anchors never contain one another (choose_anchors), so no two hits share a start. */
        qsort(hits.items, (size_t)hits.len, sizeof(Hit), hit_order);
    }

    Py_ssize_t last = base;
    for (Py_ssize_t h = 0; h < hits.len && h < AHEAD; h++) {
        hash_ahead(&hits.items[h], specs, buf, n);
    }
    for (Py_ssize_t h = 0; h < hits.len; h++) {
        if (h + AHEAD < hits.len) {
            hash_ahead(&hits.items[h + AHEAD], specs, buf, n);
        }
        if (h + AHEAD / 2 < hits.len) {
            key_ahead(&hits.items[h + AHEAD / 2], specs);
        }
        Py_ssize_t i = hits.items[h].pos;
        if (i < base) {
            continue; /* in the emitted context: an edit there would start before base */
        }
        Spec *spec = &specs[hits.items[h].index];
        Py_ssize_t rel_start, rel_end;
        PyObject *repl;
        Entry *known = lookup(&hits.items[h], spec, buf, n);
        if (known != NULL) {
            rel_start = known->rel_start;
            rel_end = known->rel_end;
            repl = known->repl;
            if (repl == NULL) {
                continue;
            }
            Py_INCREF(repl);
        }
        else {
            /* The memo does not know these bytes: Python decides (and remembers). */
            PyObject *decided = PyObject_CallFunction(miss, "nn", i, hits.items[h].index);
            if (decided == NULL) {
                goto done;
            }
            if (decided == Py_None) {
                Py_DECREF(decided); /* needs bytes not received yet: left for the next call */
                continue;
            }
            if (edit_parts(decided, &rel_start, &rel_end, &repl) < 0) {
                Py_DECREF(decided);
                goto done;
            }
            Py_XINCREF(repl);
            Py_DECREF(decided);
            if (repl == NULL) {
                continue;
            }
        }
        /* Offsets come from Python: clamp before adding, so no sum can overflow. */
        Py_ssize_t start = rel_start > n - i ? n + 1 : rel_start < -i ? -1 : i + rel_start;
        Py_ssize_t end = rel_end > n - i ? n + 1 : rel_end < -i ? -1 : i + rel_end;
        if (start < last) {
            Py_DECREF(repl); /* SECURITY: never two edits over the same bytes, nor one over sent bytes */
            continue;
        }
        if (start >= limit) {
            Py_DECREF(repl);
            break;
        }
        if (end < start || end > n) {
            Py_DECREF(repl);
            PyErr_SetString(PyExc_ValueError, "an edit ends outside the buffer");
            goto done;
        }
        if (nedits == capedits) {
            Py_ssize_t cap = capedits ? capedits * 2 : 64;
            Edit *grown = PyMem_Realloc(edits, (size_t)cap * sizeof(Edit));
            if (grown == NULL) {
                Py_DECREF(repl);
                PyErr_NoMemory();
                goto done;
            }
            edits = grown;
            capedits = cap;
        }
        edits[nedits].start = start;
        edits[nedits].end = end;
        edits[nedits].repl = repl;
        nedits++;
        last = end;
    }

    {
        Py_ssize_t cut = last > limit ? last : limit;
        Py_ssize_t size = cut - base;
        for (Py_ssize_t e = 0; e < nedits; e++) {
            size += PyBytes_GET_SIZE(edits[e].repl) - (edits[e].end - edits[e].start);
        }
        PyObject *out;
        if (nedits == 0 && base == 0 && cut == n) {
            out = Py_NewRef(buf_obj);
        }
        else {
            out = PyBytes_FromStringAndSize(NULL, size);
            if (out == NULL) {
                goto done;
            }
            char *w = PyBytes_AS_STRING(out);
            Py_ssize_t at = base;
            for (Py_ssize_t e = 0; e < nedits; e++) {
                memcpy(w, buf + at, (size_t)(edits[e].start - at));
                w += edits[e].start - at;
                Py_ssize_t rl = PyBytes_GET_SIZE(edits[e].repl);
                memcpy(w, PyBytes_AS_STRING(edits[e].repl), (size_t)rl);
                w += rl;
                at = edits[e].end;
            }
            memcpy(w, buf + at, (size_t)(cut - at));
        }
        result = Py_BuildValue("(Nn)", out, cut);
    }

done:
    for (Py_ssize_t e = 0; e < nedits; e++) {
        Py_DECREF(edits[e].repl);
    }
    PyMem_Free(edits);
    PyMem_Free(hits.items);
    return result;
}

static PyMethodDef hostscan_methods[] = {
    {"rewrite", hostscan_rewrite, METH_VARARGS,
     "rewrite(buf, base, limit, specs, miss) -> (bytes, cut): see hosts.Matcher.rewrite."},
    {NULL, NULL, 0, NULL},
};

static int
hostscan_exec(PyObject *module)
{
    /* Seed the memo hash from the OS's random source (see MAX_PROBE). */
    PyObject *os = PyImport_ImportModule("os");
    if (os == NULL) {
        return -1;
    }
    PyObject *raw = PyObject_CallMethod(os, "urandom", "i", 8);
    Py_DECREF(os);
    if (raw == NULL) {
        return -1;
    }
    /* Once per process: a second instance of the module (a subinterpreter) must not change
     * the seed under the memos that already exist. */
    static int seeded = 0;
    if (!seeded && PyBytes_Check(raw) && PyBytes_GET_SIZE(raw) == 8) {
        memcpy(&hash_seed, PyBytes_AS_STRING(raw), 8);
        seeded = 1;
    }
    Py_DECREF(raw);
    for (int c = 0; c < 256; c++) {
        run_byte[c] = (unsigned char)((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                                      c == '.' || c == '-' || c == '_');
    }
#if defined(HAVE_AVX2_PATH)
    __builtin_cpu_init();
    have_avx2 = __builtin_cpu_supports("avx2") ? 1 : 0;
#endif
    if (PyModule_AddIntConstant(module, "MAX_ANCHORS", MAX_SPECS) < 0 ||
        PyModule_AddIntConstant(module, "MAX_RUN", MAX_RUN) < 0 ||
        PyModule_AddIntConstant(module, "MAX_SHAPES", MAX_SHAPES) < 0 ||
        PyModule_AddIntConstant(module, "MAX_LEFT", MAX_LEFT) < 0 ||
        PyModule_AddIntConstant(module, "MAX_RIGHT", MAX_RIGHT) < 0) {
        return -1;
    }
    if (PyType_Ready(&MemoType) < 0) {
        return -1;
    }
    Py_INCREF(&MemoType);
    if (PyModule_AddObject(module, "Memo", (PyObject *)&MemoType) < 0) {
        Py_DECREF(&MemoType);
        return -1;
    }
    return 0;
}

static PyModuleDef_Slot hostscan_slots[] = {
    {Py_mod_exec, hostscan_exec},
    {0, NULL},
};

static struct PyModuleDef hostscan_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "proxy.rewrite._hostscan",
    .m_doc = "The compiled hot loop of host rewriting; see hosts.py.",
    .m_size = 0,
    .m_methods = hostscan_methods,
    .m_slots = hostscan_slots,
};

PyMODINIT_FUNC
PyInit__hostscan(void)
{
    return PyModuleDef_Init(&hostscan_module);
}
