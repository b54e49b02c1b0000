package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"os"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/node/nodeutil"
	"k8s.io/apiserver/pkg/server/dynamiccertificates"
)

type servingOpts struct {
	opts     []func(*tls.Config) error
	clientCA []byte
}

// servingTLS is the kubelet API's TLS: the given certificate or a
// self-signed one (the API server does not check a kubelet's serving
// certificate unless told to), and the CA that client certificates (the
// API server's, for logs and exec) must chain to.
func servingTLS(o options, kubeCAData []byte, kubeCAFile string) (servingOpts, error) {
	var s servingOpts
	if o.tlsCert != "" || o.tlsKey != "" {
		s.opts = append(s.opts, nodeutil.WithKeyPairFromPath(o.tlsCert, o.tlsKey))
	} else {
		cert, err := selfSigned(o.nodeName, o.nodeIP)
		if err != nil {
			return s, err
		}
		s.opts = append(s.opts, func(c *tls.Config) error {
			c.Certificates = append(c.Certificates, cert)
			return nil
		})
	}
	var err error
	switch {
	case o.clientCA != "":
		s.clientCA, err = os.ReadFile(o.clientCA)
	case len(kubeCAData) > 0:
		s.clientCA = kubeCAData
	case kubeCAFile != "":
		s.clientCA, err = os.ReadFile(kubeCAFile)
	default:
		return s, fmt.Errorf("no CA to check the API server's client certificate with (hint: pass --client-ca)")
	}
	if err != nil {
		return s, fmt.Errorf("read client CA: %w", err)
	}
	s.opts = append(s.opts, nodeutil.WithCACert(s.clientCA))
	return s, nil
}

// clientCertAuth makes the kubelet API accept client certificates signed
// by ca (besides bearer tokens, checked with a TokenReview).
func clientCertAuth(ca []byte) nodeutil.WebhookAuthOption {
	return func(c *nodeutil.WebhookAuthConfig) error {
		p, err := dynamiccertificates.NewStaticCAContent("client-ca", ca)
		if err != nil {
			return fmt.Errorf("client CA: %w", err)
		}
		c.AuthnConfig.ClientCertificateCAContentProvider = p
		return nil
	}
}

// selfSigned makes a serving certificate for the node's name and address,
// valid for a year.
func selfSigned(name, ip string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{name},
	}
	if a := net.ParseIP(ip); a != nil {
		tmpl.IPAddresses = []net.IP{a}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("make serving certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
