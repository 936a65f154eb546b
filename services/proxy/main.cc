// tidepool-proxy: the proxy service on its own (see README.md beside this file).
#include "lib/service_main.h"
#include "services/proxy/proxy_admin_service.h"

int main(int argc, char** argv) {
  return tidepool::ServerBinaryMain("tidepool-proxy", argc, argv,
                                    {tidepool::proxy::ProxyServiceDefinition()});
}
