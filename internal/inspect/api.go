package inspect

import "net/http"

// routeAPI mounts the JSON API. (Being built: issue 15.)
func (in *Inspector) routeAPI(mux *http.ServeMux, cfg HandlerConfig) {}
