// tidepool-scaler: the scaler service on its own (see README.md beside this file).
#include "lib/service_main.h"
#include "services/scaler/scaler_service.h"

int main(int argc, char** argv) {
  return tidepool::ServerBinaryMain("tidepool-scaler", argc, argv,
                                    {tidepool::scaler::ScalerServiceDefinition()});
}
