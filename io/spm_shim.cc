// spm_shim.cc: the C API of spm_shim.h over sentencepiece::SentencePieceProcessor. No exception crosses into C:
// allocation failures and sentencepiece errors come back as NULL / -1 with a message.
#include "spm_shim.h"

#include <sentencepiece_processor.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

struct SpmShim {
    sentencepiece::SentencePieceProcessor proc;
    int unk_id = 0;
    int size = 0;
};

static void shim_msg(char *err, size_t errlen, const std::string &m) {
    if (err && errlen) std::snprintf(err, errlen, "%s", m.c_str());
}

extern "C" SpmShim *spm_shim_load(const void *model_bytes, size_t n, char *err, size_t errlen) {
    try {
        SpmShim *s = new SpmShim();
        auto st = s->proc.LoadFromSerializedProto(std::string_view(static_cast<const char *>(model_bytes), n));
        if (!st.ok()) {
            shim_msg(err, errlen, "not a valid sentencepiece model: " + st.ToString());
            delete s;
            return nullptr;
        }
        s->size = s->proc.GetPieceSize();
        s->unk_id = s->proc.unk_id();
        if (s->size <= 0) {
            shim_msg(err, errlen, "sentencepiece model has no pieces");
            delete s;
            return nullptr;
        }
        return s;
    } catch (const std::exception &ex) {
        shim_msg(err, errlen, std::string("sentencepiece load failed: ") + ex.what());
        return nullptr;
    }
}

extern "C" void spm_shim_free(SpmShim *s) { delete s; }

extern "C" int spm_shim_piece_size(const SpmShim *s) { return s->size; }

extern "C" int spm_shim_unk_id(const SpmShim *s) { return s->unk_id; }

extern "C" float spm_shim_score(const SpmShim *s, int id) { return s->proc.GetScore(id); }

extern "C" const char *spm_shim_id_to_piece(const SpmShim *s, int id) {
    if (id < 0 || id >= s->size) return nullptr;
    return s->proc.IdToPiece(id).c_str();
}
