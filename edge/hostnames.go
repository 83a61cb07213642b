package edge

import "context"

// hostTunnel returns the stored tunnel that claims host as a custom
// hostname.
func (s *Server) hostTunnel(ctx context.Context, host string) (name string, ok bool, err error) {
	return "", false, nil
}
