// tidepool-auth: the auth service on its own (see README.md beside this file).
#include "lib/service_main.h"
#include "services/auth/auth_service.h"

int main(int argc, char** argv) {
  return tidepool::ServerBinaryMain("tidepool-auth", argc, argv,
                                    {tidepool::auth::AuthServiceDefinition()});
}
