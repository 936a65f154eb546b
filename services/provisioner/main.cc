// tidepool-provisioner: the provisioner service on its own (see README.md beside this file).
#include "lib/service_main.h"
#include "services/provisioner/workspace_service.h"

int main(int argc, char** argv) {
  return tidepool::ServerBinaryMain("tidepool-provisioner", argc, argv,
                                    {tidepool::provisioner::ProvisionerServiceDefinition()});
}
