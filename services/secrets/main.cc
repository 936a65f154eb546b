// tidepool-secrets: the secrets service on its own (see README.md beside this file).
#include "lib/service_main.h"
#include "services/secrets/secrets_service.h"

int main(int argc, char** argv) {
  return tidepool::ServerBinaryMain("tidepool-secrets", argc, argv,
                                    {tidepool::secrets::SecretsServiceDefinition()});
}
