// Embeds services/secrets/catalogue.json into the binary, so that a moved or installed binary
// serves the catalogue it was built with and needs no data file at run time.
//
// Two mechanisms work together, both keyed on the include path that has the repository root
// on it (every Tidepool target has it, see lib/CMakeLists.txt):
//   1. The assembler's .incbin directive copies the file's bytes into .rodata. GCC hands its
//      -I directories to the assembler, so the repository-relative path resolves.
//   2. The #include below makes the preprocessor read the file, which puts it into this
//      object's dependency list: editing catalogue.json rebuilds this file. The JSON tokens land
//      inside the arguments of an attribute nobody implements, which compilers skip. This needs
//      the file to be a valid token sequence, which JSON is, provided no string uses the "\/"
//      escape (the catalogue never needs it).
// Nothing here is parsed: Catalogue::LoadEmbedded() parses and validates the bytes at start.
#include <cstddef>

#include "services/secrets/catalogue.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wattributes"
#ifdef __clang__
#pragma clang diagnostic ignored "-Wunknown-attributes"
#endif
[[tidepool::build_depends_on(
#include "services/secrets/catalogue.json"
    )]];
#pragma GCC diagnostic pop

// The bytes, then their length as an assemble-time constant (no relocation needed). The symbols
// are hidden: visible to this library only, addressed relative to the instruction pointer.
asm(R"(
    .pushsection .rodata.tidepool_secrets_catalogue, "a"
    .globl tidepool_secrets_catalogue_json
    .hidden tidepool_secrets_catalogue_json
    .globl tidepool_secrets_catalogue_json_size
    .hidden tidepool_secrets_catalogue_json_size
    .balign 8
tidepool_secrets_catalogue_json_size:
    .quad tidepool_secrets_catalogue_json_end - tidepool_secrets_catalogue_json
tidepool_secrets_catalogue_json:
    .incbin "services/secrets/catalogue.json"
tidepool_secrets_catalogue_json_end:
    .byte 0
    .popsection
)");

extern "C" {
__attribute__((visibility("hidden"))) extern const char tidepool_secrets_catalogue_json[];
__attribute__((
    visibility("hidden"))) extern const unsigned long long tidepool_secrets_catalogue_json_size;
}

namespace tidepool::secrets {

absl::string_view EmbeddedCatalogueJson() {
  return absl::string_view(tidepool_secrets_catalogue_json,
                           static_cast<size_t>(tidepool_secrets_catalogue_json_size));
}

}  // namespace tidepool::secrets
