#include "runtime/tokenizer/unicode.h"

#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>

#include "absl/strings/str_cat.h"

namespace strata::unicode {
namespace {

// The length of the UTF-8 sequence starting at `p` (1..4), or 0 if invalid;
// decodes it into `*cp`.
int DecodeOne(const unsigned char* p, size_t left, char32_t* cp) {
  const unsigned char b = p[0];
  int n;
  char32_t min;
  if (b < 0x80) {
    *cp = b;
    return 1;
  } else if ((b & 0xE0) == 0xC0) {
    n = 2, *cp = b & 0x1F, min = 0x80;
  } else if ((b & 0xF0) == 0xE0) {
    n = 3, *cp = b & 0x0F, min = 0x800;
  } else if ((b & 0xF8) == 0xF0) {
    n = 4, *cp = b & 0x07, min = 0x10000;
  } else {
    return 0;
  }
  if (left < static_cast<size_t>(n)) return 0;
  for (int i = 1; i < n; ++i) {
    if ((p[i] & 0xC0) != 0x80) return 0;
    *cp = (*cp << 6) | (p[i] & 0x3F);
  }
  if (*cp < min || *cp > 0x10FFFF || (*cp >= 0xD800 && *cp <= 0xDFFF)) return 0;
  return n;
}

int32_t Mask(char32_t cp) {
  return cp == kInvalid ? 0 : U_MASK(u_charType(static_cast<UChar32>(cp)));
}

absl::StatusOr<std::string> Normalize(std::string_view text, bool compatibility) {
  UErrorCode status = U_ZERO_ERROR;
  const UNormalizer2* form =
      compatibility ? unorm2_getNFKCInstance(&status) : unorm2_getNFCInstance(&status);
  if (U_FAILURE(status)) return absl::InternalError(absl::StrCat("ICU: ", u_errorName(status)));
  // UTF-8 -> UTF-16 -> normalised UTF-16 -> UTF-8.
  std::u16string wide(text.size() + 1, u'\0');
  int32_t wide_len = 0;
  u_strFromUTF8(wide.data(), static_cast<int32_t>(wide.size()), &wide_len, text.data(),
                static_cast<int32_t>(text.size()), &status);
  if (U_FAILURE(status)) return absl::InvalidArgumentError("text is not valid UTF-8");
  wide.resize(wide_len);
  if (unorm2_isNormalized(form, wide.data(), wide_len, &status) && U_SUCCESS(status)) {
    return std::string(text);
  }
  status = U_ZERO_ERROR;
  std::u16string normal(wide.size() * 3 + 16, u'\0');
  const int32_t normal_len = unorm2_normalize(form, wide.data(), wide_len, normal.data(),
                                              static_cast<int32_t>(normal.size()), &status);
  if (U_FAILURE(status)) return absl::InternalError(absl::StrCat("ICU: ", u_errorName(status)));
  std::string out(static_cast<size_t>(normal_len) * 3 + 1, '\0');
  int32_t out_len = 0;
  u_strToUTF8(out.data(), static_cast<int32_t>(out.size()), &out_len, normal.data(), normal_len,
              &status);
  if (U_FAILURE(status)) return absl::InternalError(absl::StrCat("ICU: ", u_errorName(status)));
  out.resize(out_len);
  return out;
}

}  // namespace

std::vector<Char> Decode(std::string_view text) {
  std::vector<Char> chars;
  chars.reserve(text.size() + 1);
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  for (size_t i = 0; i < text.size();) {
    char32_t cp = 0;
    const int n = DecodeOne(p + i, text.size() - i, &cp);
    chars.push_back({n == 0 ? kInvalid : cp, static_cast<uint32_t>(i)});
    i += n == 0 ? 1 : n;
  }
  chars.push_back({kInvalid, static_cast<uint32_t>(text.size())});
  return chars;
}

int Utf8SequenceLength(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xF0 && lead <= 0xF4) return 4;
  return 0;
}

bool Utf8ValidContinuation(unsigned char lead, int i, unsigned char b) {
  if ((b & 0xC0) != 0x80) return false;
  if (i != 1) return true;
  if (lead == 0xE0) return b >= 0xA0;
  if (lead == 0xED) return b <= 0x9F;
  if (lead == 0xF0) return b >= 0x90;
  if (lead == 0xF4) return b <= 0x8F;
  return true;
}

bool IsValidUtf8(std::string_view text, size_t* bad_at) {
  size_t i = 0;
  while (i < text.size()) {
    const auto lead = static_cast<unsigned char>(text[i]);
    const int len = Utf8SequenceLength(lead);
    bool ok = len > 0 && i + len <= text.size();
    for (int k = 1; ok && k < len; ++k) {
      ok = Utf8ValidContinuation(lead, k, static_cast<unsigned char>(text[i + k]));
    }
    if (!ok) {
      if (bad_at != nullptr) *bad_at = i;
      return false;
    }
    i += len;
  }
  return true;
}

void AppendUtf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

bool IsLetter(char32_t cp) { return (Mask(cp) & U_GC_L_MASK) != 0; }
bool IsNumber(char32_t cp) { return (Mask(cp) & U_GC_N_MASK) != 0; }
bool IsMark(char32_t cp) { return (Mask(cp) & U_GC_M_MASK) != 0; }
bool IsWhitespace(char32_t cp) {
  return cp != kInvalid && u_hasBinaryProperty(static_cast<UChar32>(cp), UCHAR_WHITE_SPACE);
}
bool IsUpperOrOther(char32_t cp) {
  return (Mask(cp) & (U_GC_LU_MASK | U_GC_LT_MASK | U_GC_LM_MASK | U_GC_LO_MASK | U_GC_M_MASK)) !=
         0;
}
bool IsLowerOrOther(char32_t cp) {
  return (Mask(cp) & (U_GC_LL_MASK | U_GC_LM_MASK | U_GC_LO_MASK | U_GC_M_MASK)) != 0;
}

absl::StatusOr<std::string> ToNfc(std::string_view text) { return Normalize(text, false); }
absl::StatusOr<std::string> ToNfkc(std::string_view text) { return Normalize(text, true); }

}  // namespace strata::unicode
